/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon/main.c — smtpedge's start and stop.
 *
 * The command line follows DPDK's convention: EAL options, then "--", then
 * ours. Our options and the configuration file are checked before EAL
 * starts, so a bad config costs no hugepages and gets one clear line. The
 * main lcore then hosts the control plane; every other lcore is a worker
 * with its own queue pair on the port.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_random.h>

#include "control/config.h"
#include "control/ctlplane.h"
#include "control/policy.h"
#include "control/tlsctl.h"
#include "control/txlog.h"
#include "daemon/planes.h"
#include "daemon/telemetry.h"
#include "dataplane/port.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"
#include "smtpedge_version.h"

RTE_LOG_REGISTER_DEFAULT(smtpedge_logtype, INFO);
#define LOG(level, fmt, ...) \
	rte_log(RTE_LOG_##level, smtpedge_logtype, "smtpedge: " fmt "\n", ##__VA_ARGS__)

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: smtpedge [EAL options] -- --config FILE [--check]\n"
		   "       smtpedge --help | --version\n"
		   "\n"
		   "An SMTP edge filter for IPv6 (and IPv4) senders on a DPDK port.\n"
		   "  --config FILE  the configuration (INI; see the README)\n"
		   "  --check        check the configuration, print \"config ok\", exit\n"
		   "  --help         this text\n"
		   "  --version      the version\n"
		   "EAL options: see DPDK's documentation; e.g. in the lab\n"
		   "  -l 0-1 --no-huge -m 256 --no-pci --vdev=net_af_packet0,iface=se-edge0\n");
}

struct app_args {
	const char *config;
	bool check;
};

/* Our options, after "--". Returns 0 to go on, 1 to exit 0, -1 on error. */
static int
parse_app_args(int argc, char **argv, struct app_args *a)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	optind = 1;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (o) {
		case 'c': a->config = optarg; break;
		case 'k': a->check = true; break;
		case 'h': usage(stdout); return 1;
		case 'V': printf("smtpedge %s\n", SMTPEDGE_VERSION); return 1;
		default:
			fprintf(stderr, "smtpedge: unknown option \"%s\" (try --help)\n",
				argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "smtpedge: unexpected argument \"%s\" (try --help)\n",
			argv[optind]);
		return -1;
	}
	if (!a->config) {
		fprintf(stderr, "smtpedge: --config FILE is required (try --help)\n");
		return -1;
	}
	return 0;
}

static int
find_separator(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "--") == 0)
			return i;
	return -1;
}

static int
log_setup(const struct edge_config *cfg)
{
	if (cfg->log_file[0]) {
		FILE *f = txlog_open(cfg->log_file);

		if (!f) {
			fprintf(stderr, "smtpedge: %s: [log] file: cannot open %s: %s\n", cfg->path,
				cfg->log_file, strerror(errno));
			return -1;
		}
		setvbuf(f, NULL, _IOLBF, 0);
		rte_openlog_stream(f);
	}
	rte_log_set_level(smtpedge_logtype, cfg->log_level);
	return 0;
}

static void
log_final_counters(void)
{
	struct dp_stats t;

	dp_stats_total(&t);
	LOG(INFO,
	    "stopped rx_packets=%" PRIu64 " tx_packets=%" PRIu64 " rx_dropped=%" PRIu64
	    " tx_dropped=%" PRIu64 " arp_replies=%" PRIu64 " nd_adverts=%" PRIu64
	    " echo_replies=%" PRIu64 " tcp_segments=%" PRIu64,
	    t.c[DP_RX_PACKETS], t.c[DP_TX_PACKETS], t.c[DP_RX_DROPPED], t.c[DP_TX_DROPPED],
	    t.c[DP_ARP_REPLIES], t.c[DP_ND_ADVERTS], t.c[DP_ECHO4_REPLIES] + t.c[DP_ECHO6_REPLIES],
	    t.c[DP_TCP_SEGMENTS]);
}

static int
start_workers(const struct edge_config *cfg, struct port_state *port, struct planes *pl,
	      struct worker **workers)
{
	struct worker_params wp = {
		.sess = &pl->sess, .faults = pl->faults, .port = port, .txrecs = pl->txrecs
	};
	struct timeval tv;
	unsigned lcore;
	uint16_t q = 0;

	pkt_local_init(&wp.local, port->mac);
	wp.local.mtu = cfg->mtu;
	wp.local.has_ip6 = cfg->has_addr6;
	memcpy(wp.local.ip6, cfg->addr6, 16);
	wp.local.has_ip4 = cfg->has_addr4;
	memcpy(wp.local.ip4, cfg->addr4, 4);
	gettimeofday(&tv, NULL);
	wp.tsc0 = rte_rdtsc();
	wp.tsc_hz = rte_get_tsc_hz();
	wp.wall0_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	wp.secret_seed = rte_rand();
	RTE_LCORE_FOREACH_WORKER (lcore) {
		wp.queue = q;
		wp.tls_slot = tlsctl_slot(q);
		wp.lcore = lcore;
		wp.req = pl->req[q];
		wp.ver = pl->ver[q];
		workers[q] = worker_create(&wp);
		if (!workers[q]) {
			fprintf(stderr,
				"smtpedge: worker %u: %s (more memory with -m, or fewer [dataplane] flows or body_budget_mb)\n",
				lcore, rte_strerror(rte_errno));
			return -1;
		}
		q++;
	}
	q = 0;
	RTE_LCORE_FOREACH_WORKER (lcore)
		rte_eal_remote_launch(worker_main, workers[q++], lcore);
	return 0;
}

int
main(int argc, char **argv)
{
	static struct edge_config cfg;
	static struct port_state port;
	static struct planes planes;
	static struct worker *workers[RTE_MAX_LCORE];
	struct ctlplane_params cp = { 0 };
	struct ctlplane *pool = NULL;
	char err[512];
	struct port_params pp = { 0 };
	struct app_args args = { 0 };
	int sep = find_separator(argc, argv), rc;
	mode_t old_mask;
	unsigned n_workers = 0, i;

	/* Without "--", everything is ours (smtpedge --help). */
	rc = sep < 0 ? parse_app_args(argc, argv, &args) :
		       parse_app_args(argc - sep, argv + sep, &args);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	if (config_load(args.config, &cfg, stderr) < 0)
		return 2;
	if (args.check) {
		printf("config ok: %s (per worker: flows %u, session_buffers %u, memory_mb %u)\n",
		       args.config, cfg.flows, cfg.session_buffers, cfg.memory_mb);
		return 0;
	}
	if (sep < 0) {
		fprintf(stderr, "smtpedge: no EAL options: give them before \"--\" (try --help)\n");
		return 2;
	}

	/* The telemetry socket (the CLI, which changes policy) is made in
	 * here: nobody but its owner may reach it. */
	old_mask = umask(077);
	rc = rte_eal_init(sep, argv);
	umask(old_mask);
	if (rc < 0) {
		fprintf(stderr, "smtpedge: EAL init failed: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	if (telemetry_secure_socket() < 0) {
		fprintf(stderr, "smtpedge: telemetry socket in %s: %s\n", rte_eal_get_runtime_dir(),
			strerror(errno));
		goto fail;
	}
	if (log_setup(&cfg) < 0)
		goto fail;
	n_workers = rte_lcore_count() - 1;
	if (n_workers == 0) {
		fprintf(stderr,
			"smtpedge: no worker lcore: give at least two lcores (e.g. -l 0-1)\n");
		goto fail;
	}
	if (rte_eth_dev_count_avail() == 0) {
		fprintf(stderr,
			"smtpedge: no DPDK port: bind a NIC or give --vdev=net_af_packet0,iface=IF\n");
		goto fail;
	}

	pp.port_id = 0;
	pp.n_queues = (uint16_t)n_workers;
	pp.mbufs = cfg.mbufs;
	pp.rx_desc = cfg.rx_desc;
	pp.tx_desc = cfg.tx_desc;
	pp.mtu = cfg.mtu;
	pp.ip6 = cfg.has_addr6 ? cfg.addr6 : NULL;
	if (port_setup(&pp, &port) < 0)
		goto fail;
	if (planes_create(&cfg, n_workers, &planes) < 0)
		goto fail;
	policy_live_init(&cfg.policy);
	cp.cfg = &cfg;
	cp.n_workers = n_workers;
	cp.req = planes.req;
	cp.ver = planes.ver;
	cp.txrec_pool = planes.txrecs;
	cp.max_flows = cfg.flows;
	pool = ctlplane_create(&cp, err, sizeof(err));
	if (!pool) {
		fprintf(stderr, "smtpedge: %s\n", err);
		goto fail;
	}
	planes.sess.spf_full = ctlplane_spf_full(pool);

	if (tlsctl_init(&cfg, n_workers, err, sizeof(err)) < 0) {
		fprintf(stderr, "smtpedge: %s: %s\n", cfg.path, err);
		goto fail;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (start_workers(&cfg, &port, &planes, workers) < 0) {
		worker_stop_all();
		rte_eal_mp_wait_lcore();
		goto fail;
	}
	if (telemetry_register(&(struct telemetry_sources){
		    .cfg = &cfg,
		    .port = &port,
		    .workers = workers,
		    .n_workers = n_workers,
		    .txrecs = planes.txrecs,
		    .req = planes.req,
		    .ver = planes.ver }) < 0)
		LOG(WARNING, "telemetry commands not registered");
	LOG(INFO, "started version=%s hostname=%s port=%u driver=%s workers=%u rss=%s",
	    SMTPEDGE_VERSION, cfg.hostname, port.port_id, port.driver, n_workers,
	    port.rss ? "yes" : "no");

	/* The main lcore is the control plane's dispatcher from here on. */
	ctlplane_run(pool, &stop_signal);

	LOG(INFO, "signal=%d stopping", (int)stop_signal);
	worker_stop_all();
	rte_eal_mp_wait_lcore();
	ctlplane_destroy(pool);
	log_final_counters();
	for (i = 0; i < n_workers; i++)
		worker_destroy(workers[i]);
	tlsctl_fini();
	planes_free(&planes);
	port_shutdown(&port);
	rte_eal_cleanup();
	return 0;
fail:
	ctlplane_destroy(pool);
	for (i = 0; i < n_workers && i < RTE_MAX_LCORE; i++)
		worker_destroy(workers[i]);
	tlsctl_fini();
	planes_free(&planes);
	port_shutdown(&port);
	rte_eal_cleanup();
	return 1;
}
