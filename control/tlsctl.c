/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/tlsctl.c — TLS contexts and ticket keys for the workers (see tlsctl.h).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_lcore.h>
#include <rte_log.h>

#include "tls/tls.h"

#include "control/config.h"
#include "control/tlsctl.h"

extern int smtpedge_logtype;

static const struct edge_config *tc_cfg;
static struct tls_tickets *tickets;
static struct tls_slot slots[RTE_MAX_LCORE];
static unsigned n_slots;
static pthread_t rotator;
static bool rotator_running;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool stopping;

static struct tls_ctx *
load(char *why, size_t len)
{
	struct tls_ctx_params p;
	const char *key = "cert";
	struct tls_ctx *c;
	char w[256];

	config_tls_params(tc_cfg, &p);
	p.tickets = tickets;
	c = tls_ctx_create(&p, &key, w, sizeof(w));
	if (!c)
		snprintf(why, len, "[tls] %s: %s", key, w);
	return c;
}

/* One reference per worker; each worker drops it for the next. */
static void
offer(struct tls_ctx *c)
{
	unsigned i;

	for (i = 0; i < n_slots; i++) {
		tls_ctx_ref(c);
		tls_slot_offer(&slots[i], c);
	}
	tls_ctx_put(c);
}

static void *
rotate_loop(void *arg)
{
	struct timespec t;

	(void)arg;
	pthread_mutex_lock(&lock);
	while (!stopping) {
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_sec += tc_cfg->tls_ticket_rotate_s;
		if (pthread_cond_timedwait(&wake, &lock, &t) != 0 && !stopping)
			tls_tickets_rotate(tickets);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int
tlsctl_init(const struct edge_config *cfg, unsigned n_workers, char *err, size_t errlen)
{
	struct tls_ctx *c;

	tc_cfg = cfg;
	if (!cfg->tls_cert[0])
		return 0;
	tickets = tls_tickets_create();
	if (!tickets) {
		snprintf(err, errlen, "[tls]: no memory for the ticket keys");
		return -1;
	}
	c = load(err, errlen);
	if (!c)
		return -1;
	n_slots = n_workers;
	offer(c);
	if (pthread_create(&rotator, NULL, rotate_loop, NULL) != 0) {
		snprintf(err, errlen, "[tls] ticket_rotate_s: cannot start the rotation thread");
		return -1;
	}
	rotator_running = true;
	return 0;
}

struct tls_slot *
tlsctl_slot(unsigned worker)
{
	return tickets && worker < n_slots ? &slots[worker] : NULL;
}

int
tlsctl_reload(char *why, size_t len)
{
	struct tls_ctx *c;

	if (!tickets) {
		snprintf(why, len, "[tls] cert: not configured (STARTTLS is off)");
		return -1;
	}
	c = load(why, len);
	if (!c)
		return -1;
	offer(c);
	rte_log(RTE_LOG_NOTICE, smtpedge_logtype, "smtpedge: tls reload cert=%s rsa_cert=%s\n",
		tc_cfg->tls_cert, tc_cfg->tls_rsa_cert[0] ? tc_cfg->tls_rsa_cert : "-");
	return 0;
}

void
tlsctl_fini(void)
{
	unsigned i;

	if (rotator_running) {
		pthread_mutex_lock(&lock);
		stopping = true;
		pthread_cond_signal(&wake);
		pthread_mutex_unlock(&lock);
		pthread_join(rotator, NULL);
		rotator_running = false;
	}
	for (i = 0; i < n_slots; i++)
		tls_slot_clear(&slots[i]);
	tls_tickets_free(tickets);
	tickets = NULL;
}
