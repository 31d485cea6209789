/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/ctlplane.c — the control plane: the dispatcher and the work threads
 * (see ctlplane.h).
 *
 * Waking: the workers never make a system call for the control plane. The
 * dispatcher polls the request rings and libunbound's fd: while it finds
 * work it does not sleep; when idle it waits in poll() for at most 1 ms,
 * which is also the worst latency it adds. Work threads back off from 20 us
 * to 1 ms when their job ring is empty.
 *
 * What the control plane keeps per session is one slot per worker session
 * slot (generation, PTR result and name, the transaction's SPF job): written
 * by the dispatcher only, and overwritten when the worker reuses the slot.
 *
 * SPF starts at MAIL FROM: the dispatcher queues an SPF job and keeps a
 * reference in the session's slot; the delivery job at the end of DATA takes
 * it over. Whichever work thread gets to a queued SPF job first runs it (a
 * delivery job runs it itself rather than wait for a queued one), so no work
 * thread ever waits for a job that sits behind it in the queue.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "dns/rdns.h"
#include "dns/resolver.h"

#include "common/chunk.h"
#include "common/msg.h"
#include "common/sizing.h"
#include "common/txrec.h"

#include "control/checks.h"
#include "control/config.h"
#include "control/ctlplane.h"
#include "control/relay.h"
#include "control/spool.h"
#include "control/txlog.h"

/* Requests taken from one worker's ring at once: enough to amortize the
 * dequeue, few enough that every worker's ring is visited often. */
#define BURST               32
/* Jobs waiting for a work thread (rte_ring wants a power of two). When it is
 * full a delivery is answered 451 and an SPF job is left to its delivery, so
 * the size only bounds the backlog that memory holds, one malloc'd job each. */
#define JOB_RING_SIZE       65536
/* A work thread with nothing to do sleeps, from the first, doubling while
 * below the last (so 1280 us at most): a job waits about 1 ms at worst, and
 * an idle thread costs under 1000 wakeups a second. */
#define WORK_BACKOFF_MIN_US 20
#define WORK_BACKOFF_MAX_US 1000
/* Polling a running SPF job that a delivery waits for: much shorter than a
 * DNS round trip, long enough to leave the core to the thread running it. */
#define SPF_WAIT_US         200
/* The reverse-DNS result cache: results kept (a set-associative table of
 * 288-byte entries, about 19 MB) and for how long at most, so that a client
 * that reconnects is not looked up again, and a PTR record fixed by its owner
 * is seen within 5 minutes whatever its TTL. */
#define PTR_CACHE_ENTRIES   65536
#define PTR_CACHE_TTL_S     300

struct ctl_stats ctl_stats[CTLPLANE_MAX_THREADS];

static const char *const counter_names[CTL__COUNT] = {
#define CTL_NAME(id, name) [CTL_##id] = name,
	CTL_COUNTERS(CTL_NAME)
#undef CTL_NAME
};

static const uint32_t latency_limits_ms[DNS_LATENCY_BUCKETS - 1] = {
	1, 2, 5, 10, 20, 50, 100, 200, 500, 1000
};
static const char *const latency_names[DNS_LATENCY_BUCKETS] = {
	"lt1ms",   "lt2ms",   "lt5ms",   "lt10ms",   "lt20ms",  "lt50ms",
	"lt100ms", "lt200ms", "lt500ms", "lt1000ms", "ge1000ms"
};

const char *
ctl_counter_name(enum ctl_counter c)
{
	return (unsigned)c < CTL__COUNT ? counter_names[c] : "?";
}

const char *
dns_latency_bucket_name(unsigned i)
{
	return i < DNS_LATENCY_BUCKETS ? latency_names[i] : "?";
}

void
ctl_stats_total(struct ctl_stats *out)
{
	unsigned t, i;

	memset(out, 0, sizeof(*out));
	for (t = 0; t < CTLPLANE_MAX_THREADS; t++) {
		const volatile struct ctl_stats *s = &ctl_stats[t];

		for (i = 0; i < CTL__COUNT; i++)
			out->c[i] += s->c[i];
		for (i = 0; i < DNS_LATENCY_BUCKETS; i++)
			out->dns_latency[i] += s->dns_latency[i];
	}
}

/* An SPF check begun at MAIL FROM. refs: the session slot, the queue, the
 * delivery job. state: queued, running, done. txn: the session's
 * transaction it was asked for. */
struct spf_job {
	atomic_int refs;
	atomic_int state;
	uint32_t txn;
	uint8_t family;
	uint8_t addr[16];
	char helo[256];
	char mail_from[260];
	struct auth_spf result;
};

enum { SPF_QUEUED, SPF_RUNNING, SPF_DONE };

struct ctl_sess {
	uint32_t gen;
	uint8_t ptr;
	char ptr_name[256];
	struct spf_job *spf; /* the current transaction's, or NULL */
};
/* The configuration sizes flows with this (common/sizing.h). */
_Static_assert(sizeof(struct ctl_sess) <= SIZING_CTL_SLOT_BYTES, "ctl_sess outgrew its sizing");

#define RDNS_INFLIGHT 16384 /* lookups the resolver holds at once */

/* Who asked for a lookup: the argument of its callback. */
struct rdns_req {
	struct ctlplane *pl;
	uint32_t worker, idx, gen;
};

/* What a work thread is given. */
struct work_arg {
	struct ctlplane *pl;
	unsigned idx; /* its block of ctl_stats */
};

struct ctlplane {
	const struct edge_config *cfg;
	unsigned n_workers;
	uint32_t max_flows;
	struct rte_ring *const *req;
	struct rte_ring *const *ver;
	struct rte_mempool *txrec_pool;
	struct ctl_sess *sess; /* n_workers * max_flows */
	struct ub_ctx *ub;
	struct rdns *rdns;
	struct rdns_req *reqs; /* RDNS_INFLIGHT */
	struct rdns_req **req_free;
	uint32_t n_req_free;
	struct auth *auth;
	struct spool *spool;
	struct relay *relay;
	FILE *log;
	bool log_owned;
	struct rte_ring *jobs; /* dispatcher -> work threads */
	atomic_bool stop;
	unsigned n_threads;
	pthread_t threads[CTLPLANE_MAX_THREADS - 2];
	struct work_arg thread_args[CTLPLANE_MAX_THREADS - 2];
	struct ctl_stats *st; /* the dispatcher's block */
};

/* A job for a work thread: an SPF check, or a message to check and hand
 * on for a worker's session. */
struct job {
	bool is_spf;
	struct spf_job *spf;
	struct txrec *rec;
	uint32_t worker, idx, gen;
};

static void
spf_unref(struct spf_job *j)
{
	if (j && atomic_fetch_sub(&j->refs, 1) == 1)
		free(j);
}

/* Run it here unless another thread has; wait only for a running one. */
static void
spf_finish(struct ctlplane *pl, struct spf_job *j)
{
	int expect = SPF_QUEUED;

	if (atomic_compare_exchange_strong(&j->state, &expect, SPF_RUNNING)) {
		auth_spf(pl->auth, j->family, j->addr, j->helo, j->mail_from, &j->result);
		atomic_store(&j->state, SPF_DONE);
		return;
	}
	while (atomic_load(&j->state) != SPF_DONE)
		usleep(SPF_WAIT_US);
}

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct ctl_sess *
sess_at(struct ctlplane *pl, uint32_t worker, uint32_t idx)
{
	if (worker >= pl->n_workers || idx >= pl->max_flows)
		return NULL;
	return &pl->sess[(size_t)worker * pl->max_flows + idx];
}

/* The verdict ring holds two messages per session slot, and a session has
 * at most one of each kind outstanding, so this cannot fail. */
static void
send_verdict(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m, struct ctl_stats *st)
{
	while (rte_ring_enqueue_elem(pl->ver[worker], (void *)(uintptr_t)m, sizeof(*m)) != 0)
		rte_pause();
	st->c[CTL_VERDICTS_SENT]++;
}

static enum ptr_result
ptr_from_rdns(enum rdns_result r)
{
	switch (r) {
	case RDNS_PASS: return PTR_PASS;
	case RDNS_NONE: return PTR_NONE;
	case RDNS_MISMATCH: return PTR_MISMATCH;
	default: return PTR_TEMPERROR;
	}
}

static void
count_latency(struct ctl_stats *st, uint32_t us)
{
	unsigned i;

	for (i = 0; i < DNS_LATENCY_BUCKETS - 1; i++)
		if (us < latency_limits_ms[i] * 1000u)
			break;
	st->dns_latency[i]++;
}

/* A lookup's argument: who asked, taken from a fixed free list (one entry
 * per lookup the resolver can hold) and given back with the answer. */
static struct rdns_req *
rdns_req_get(struct ctlplane *pl, uint32_t worker, uint32_t idx, uint32_t gen)
{
	struct rdns_req *q;

	if (pl->n_req_free == 0)
		return NULL;
	q = pl->req_free[--pl->n_req_free];
	*q = (struct rdns_req){ .pl = pl, .worker = worker, .idx = idx, .gen = gen };
	return q;
}

static void
rdns_req_put(struct rdns_req *q)
{
	q->pl->req_free[q->pl->n_req_free++] = q;
}

static void
rdns_done(void *arg, const struct rdns_answer *a)
{
	struct rdns_req *q = arg;
	struct ctlplane *pl = q->pl;
	uint32_t worker = q->worker, idx = q->idx, gen = q->gen;
	struct ctl_sess *cs = sess_at(pl, worker, idx);
	struct ctl_msg m = { .kind = MSG_RDNS_DONE, .idx = idx, .gen = gen };
	enum ptr_result r = ptr_from_rdns(a->result);

	rdns_req_put(q);
	pl->st->c[CTL_RDNS_PASS + (r - PTR_PASS)]++;
	if (a->cached)
		pl->st->c[CTL_RDNS_CACHED]++;
	else
		count_latency(pl->st, a->latency_us);
	if (cs && cs->gen == gen) {
		cs->ptr = (uint8_t)r;
		snprintf(cs->ptr_name, sizeof(cs->ptr_name), "%s", a->name);
	}
	m.result = (uint8_t)r;
	send_verdict(pl, worker, &m, pl->st);
}

static void
on_rdns(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct rdns_req *q;

	pl->st->c[CTL_RDNS_REQUESTS]++;
	if (!cs)
		return;
	/* A new session in this slot: what the last one left goes. */
	cs->gen = m->gen;
	cs->ptr = PTR_UNKNOWN;
	cs->ptr_name[0] = '\0';
	spf_unref(cs->spf);
	cs->spf = NULL;
	q = rdns_req_get(pl, worker, m->idx, m->gen);
	if (!q || rdns_lookup(pl->rdns, m->family, m->u.addr, rdns_done, q, now_us()) < 0) {
		struct ctl_msg v = {
			.kind = MSG_RDNS_DONE, .idx = m->idx, .gen = m->gen, .result = PTR_TEMPERROR
		};

		if (q)
			rdns_req_put(q);
		pl->st->c[CTL_RDNS_BUSY]++;
		cs->ptr = PTR_TEMPERROR;
		send_verdict(pl, worker, &v, pl->st);
	}
}

static void
fill_ptr_name(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);

	m->u.rec->ptr_name[0] = '\0';
	if (cs && cs->gen == m->gen)
		snprintf(m->u.rec->ptr_name, sizeof(m->u.rec->ptr_name), "%s", cs->ptr_name);
}

static bool
queue_job(struct ctlplane *pl, const struct job *j)
{
	struct job *jp = malloc(sizeof(*jp));

	if (!jp)
		return false;
	*jp = *j;
	if (rte_ring_enqueue(pl->jobs, jp) == 0)
		return true;
	free(jp);
	return false;
}

static void
on_spf(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct txrec *r = m->u.rec;
	struct spf_job *j;

	if (cs && cs->gen == m->gen && (j = calloc(1, sizeof(*j)))) {
		atomic_init(&j->refs, 1);
		atomic_init(&j->state, SPF_QUEUED);
		j->family = r->family;
		j->txn = r->txn;
		memcpy(j->addr, r->addr, 16);
		memcpy(j->helo, r->helo, sizeof(j->helo));
		memcpy(j->mail_from, r->mail_from, sizeof(j->mail_from));
		spf_unref(cs->spf); /* a new MAIL: the old transaction's is done */
		cs->spf = j;
		atomic_fetch_add(&j->refs, 1);
		if (!queue_job(pl, &(struct job){ .is_spf = true, .spf = j }))
			spf_unref(j); /* the delivery job will run it */
	}
	rte_mempool_put(pl->txrec_pool, r);
}

static void
on_spool(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct job j = { .rec = m->u.rec, .worker = worker, .idx = m->idx, .gen = m->gen };
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);

	pl->st->c[CTL_SPOOL_REQUESTS]++;
	fill_ptr_name(pl, worker, m);
	if (cs && cs->gen == m->gen) {
		j.spf = cs->spf; /* the delivery job takes the slot's reference */
		cs->spf = NULL;
	}
	/* Only this transaction's own check will do: when its request was
	 * lost, the slot holds an earlier MAIL's (or none), and the delivery
	 * job checks SPF itself. */
	if (j.spf && j.spf->txn != m->u.rec->txn) {
		spf_unref(j.spf);
		j.spf = NULL;
	}
	if (!j.spf)
		pl->st->c[CTL_SPF_LATE]++;
	/* One job object per request, from the heap: the control plane may
	 * allocate, and the ring carries pointers. */
	if (queue_job(pl, &j))
		return;
	/* No room for the job: the sender gets a 451, not a 250. */
	{
		struct ctl_msg v = {
			.kind = MSG_SPOOL_DONE, .idx = m->idx, .gen = m->gen, .result = 1
		};
		struct txrec *r = m->u.rec;

		spf_unref(j.spf);
		r->reply_code = 451;
		memcpy(r->reply_enh, "4.3.0", 6);
		snprintf(r->reply_text, sizeof(r->reply_text),
			 "Temporary local problem, message not queued, try again later");
		v.u.rec = r;
		pl->st->c[CTL_SPOOL_FAILED]++;
		send_verdict(pl, worker, &v, pl->st);
	}
}

static void
on_log(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	char line[TXLOG_LINE_MAX];
	size_t n;

	fill_ptr_name(pl, worker, m);
	n = txlog_format(m->u.rec, line, sizeof(line));
	if (fwrite(line, 1, n, pl->log) == n)
		pl->st->c[CTL_LOG_LINES]++;
	else
		pl->st->c[CTL_LOG_FAILED]++;
	rte_mempool_put(pl->txrec_pool, m->u.rec);
}

static unsigned
drain_requests(struct ctlplane *pl)
{
	struct ctl_msg msgs[BURST];
	unsigned w, n, i, total = 0;

	for (w = 0; w < pl->n_workers; w++) {
		n = rte_ring_dequeue_burst_elem(pl->req[w], msgs, sizeof(msgs[0]), BURST, NULL);
		for (i = 0; i < n; i++) {
			switch (msgs[i].kind) {
			case MSG_RDNS: on_rdns(pl, w, &msgs[i]); break;
			case MSG_SPOOL: on_spool(pl, w, &msgs[i]); break;
			case MSG_LOG: on_log(pl, w, &msgs[i]); break;
			case MSG_SPF: on_spf(pl, w, &msgs[i]); break;
			default: pl->st->c[CTL_UNKNOWN_MSG]++;
			}
		}
		total += n;
	}
	return total;
}

void
ctlplane_run(struct ctlplane *pl, volatile sig_atomic_t *stop)
{
	struct pollfd pfd = { .fd = rdns_fd(pl->rdns), .events = POLLIN };
	unsigned did;
	bool wrote;

	while (!*stop) {
		did = drain_requests(pl);
		wrote = did > 0;
		if (did == 0 && poll(&pfd, 1, 1) < 0 && errno != EINTR)
			break;
		rdns_process(pl->rdns, now_us());
		if (wrote)
			fflush(pl->log);
	}
	drain_requests(pl);
	fflush(pl->log);
}

static void
set_reply(struct txrec *r, uint16_t code, const char *enh, const char *text)
{
	r->reply_code = code;
	snprintf(r->reply_enh, sizeof(r->reply_enh), "%s", enh);
	snprintf(r->reply_text, sizeof(r->reply_text), "%s", text);
}

/* A message in the spool's hands: what its done call needs to answer the
 * worker. The txrec and its chunks stay alive until then (they are the
 * worker's again only when the verdict goes back). */
struct spooling {
	struct ctlplane *pl;
	struct txrec *rec;
	struct chunk *stripped; /* the body without forged headers, or NULL */
	uint32_t worker, idx, gen;
};

static void
spool_failed(struct txrec *r, int err, struct ctl_stats *st)
{
	r->spool_errno = err ? err : EIO;
	set_reply(r, 451, "4.3.0",
		  "Requested action aborted: local problem in processing, message not queued");
	st->c[CTL_SPOOL_FAILED]++;
}

/* On the spool's committer thread, once the message's group is on disk. */
static void
spooled(void *arg, int err)
{
	struct spooling *sp = arg;
	struct ctl_stats *st = &ctl_stats[CTLPLANE_SPOOL_BLOCK];
	struct txrec *r = sp->rec;
	struct ctl_msg m = { .kind = MSG_SPOOL_DONE, .idx = sp->idx, .gen = sp->gen };
	char text[200];

	if (err == 0) {
		snprintf(text, sizeof(text), "Ok: queued as %s", r->queue_id);
		set_reply(r, 250, "2.0.0", text);
		st->c[CTL_SPOOL_WRITTEN]++;
	} else {
		spool_failed(r, err, st);
	}
	free(sp->stripped);
	m.result = r->reply_code / 100 != 2;
	m.u.rec = r;
	send_verdict(sp->pl, sp->worker, &m, st);
	free(sp);
}

static void
spool_group_done(void *arg, unsigned msgs, unsigned fsyncs)
{
	struct ctl_stats *st = &ctl_stats[CTLPLANE_SPOOL_BLOCK];

	(void)arg;
	st->c[CTL_SPOOL_GROUPS]++;
	st->c[CTL_SPOOL_FSYNCS] += fsyncs;
	st->c[msgs <= 1  ? CTL_SPOOL_GROUP_1 :
	      msgs <= 4  ? CTL_SPOOL_GROUP_2_4 :
	      msgs <= 16 ? CTL_SPOOL_GROUP_5_16 :
	      msgs <= 64 ? CTL_SPOOL_GROUP_17_64 :
			   CTL_SPOOL_GROUP_65_UP]++;
}

/* Our headers, then the message (without forged Authentication-Results),
 * to the spool or the downstream. True when the spool took it: its done
 * call answers the worker. */
static bool
hand_on(struct ctlplane *pl, const struct job *j, const struct auth_verdict *v,
	struct ctl_stats *st)
{
	char prefix[4096], text[200];
	const char *rcpts[TXREC_MAX_RCPTS];
	struct txrec *r = j->rec;
	struct chunk *stripped;
	const struct chunk *msg, *c;
	size_t plen;
	uint32_t n = 0, off;

	queue_id_new(r->queue_id);
	plen = spool_received(r, pl->cfg->hostname, prefix, sizeof(prefix));
	plen += auth_results_header(
		pl->cfg->authserv_id, r, v, prefix + plen, sizeof(prefix) - plen);
	stripped = auth_strip_forged(pl->cfg->authserv_id, r->body);
	msg = stripped ? stripped : r->body;
	if (pl->spool) {
		struct spooling *sp = malloc(sizeof(*sp));
		int err = ENOMEM;

		if (sp) {
			*sp = (struct spooling){ .pl = pl,
						 .rec = r,
						 .stripped = stripped,
						 .worker = j->worker,
						 .idx = j->idx,
						 .gen = j->gen };
			if (spool_submit(pl->spool, prefix, plen, msg, spooled, sp) == 0)
				return true;
			err = errno;
			free(sp);
		}
		if (err == EAGAIN) /* too many wait for the disk: 451 at once */
			st->c[CTL_SPOOL_BUSY]++;
		spool_failed(r, err, st);
	} else {
		struct relay_result res;
		struct relay_msg rm = {
			.mail_from = r->mail_from,
			.rcpts = rcpts,
			.family = r->family,
			.addr = r->addr,
			.helo = r->helo,
			.ptr = r->ptr,
			.ptr_name = r->ptr_name,
			.prefix = prefix,
			.prefix_len = plen,
			.body = msg,
			.body_8bit = r->body_8bit,
			.smtputf8 = r->smtputf8,
		};

		if (pl->cfg->fault_spool_stall_s) /* the test shim: a slow downstream */
			sleep(pl->cfg->fault_spool_stall_s);
		CHUNK_FOREACH(c, r->rcpts)
		for (off = 0; off < c->len && n < TXREC_MAX_RCPTS;
		     off += (uint32_t)strlen((const char *)c->data + off) + 1)
			rcpts[n++] = (const char *)c->data + off;
		rm.nrcpts = n;
		relay_deliver(pl->relay, &rm, &res);
		if (res.code / 100 == 2) {
			snprintf(text, sizeof(text), "Ok: queued as %s", r->queue_id);
			set_reply(r, 250, "2.0.0", text);
			st->c[CTL_RELAY_DELIVERED]++;
		} else {
			set_reply(r, res.code, res.enh, res.text);
			st->c[CTL_RELAY_FAILED]++;
		}
	}
	free(stripped);
	return false;
}

static void
deliver_job(struct ctlplane *pl, struct job *j, struct ctl_stats *st)
{
	struct txrec *r = j->rec;
	struct auth_verdict v;
	struct ctl_msg m = { .kind = MSG_SPOOL_DONE, .idx = j->idx, .gen = j->gen };

	memset(&v, 0, sizeof(v));
	r->spool_errno = 0;
	if (j->spf) {
		spf_finish(pl, j->spf);
		v.spf = j->spf->result;
		spf_unref(j->spf);
	} else {
		auth_spf(pl->auth, r->family, r->addr, r->helo, r->mail_from, &v.spf);
	}
	auth_verify(pl->auth, r->body, &r->auth_rule, r->family, &v);
	snprintf(r->spf, sizeof(r->spf), "%s", spf_result_name(v.spf.result));
	snprintf(r->dkim, sizeof(r->dkim), "%s", auth_dkim_summary(&v));
	r->auth_outcome = (uint8_t)v.outcome;
	r->auth_checked = true;
	st->c[CTL_AUTH_PASS + v.outcome]++;
	if (v.outcome == POLICY_REJECT || v.outcome == POLICY_DEFER)
		set_reply(r, v.reply.code, v.reply.enh, v.reply.text);
	else if (hand_on(pl, j, &v, st))
		return; /* the spool answers when the message's group is on disk */
	m.result = r->reply_code / 100 != 2;
	m.u.rec = r;
	send_verdict(pl, j->worker, &m, st);
}

static void *
work_thread(void *arg)
{
	struct work_arg *wa = arg;
	struct ctlplane *pl = wa->pl;
	struct ctl_stats *st = &ctl_stats[wa->idx];
	unsigned backoff_us = WORK_BACKOFF_MIN_US;
	void *jp;

	while (!atomic_load(&pl->stop)) {
		struct job j;

		if (rte_ring_dequeue(pl->jobs, &jp) != 0) {
			usleep(backoff_us);
			if (backoff_us < WORK_BACKOFF_MAX_US)
				backoff_us *= 2;
			continue;
		}
		backoff_us = WORK_BACKOFF_MIN_US;
		j = *(struct job *)jp;
		free(jp);
		if (j.is_spf) {
			spf_finish(pl, j.spf);
			spf_unref(j.spf);
			st->c[CTL_SPF_CHECKS]++;
		} else {
			deliver_job(pl, &j, st);
		}
	}
	return NULL;
}

static int
open_log(struct ctlplane *pl, char *err, size_t errlen)
{
	const struct edge_config *c = pl->cfg;

	if (!c->log_file[0]) {
		pl->log = stderr;
		return 0;
	}
	pl->log = txlog_open(c->log_file);
	if (!pl->log) {
		snprintf(err, errlen, "%s: [log] file: cannot open %s: %s", c->path, c->log_file,
			 strerror(errno));
		return -1;
	}
	pl->log_owned = true;
	return 0;
}

struct ctlplane *
ctlplane_create(const struct ctlplane_params *p, char *err, size_t errlen)
{
	const struct edge_config *c = p->cfg;
	struct ctlplane *pl = calloc(1, sizeof(*pl));
	const char *servers[CONFIG_MAX_DNS];
	struct dns_resolver_params rp = { 0 };
	struct rdns_params dp = { 0 };
	unsigned i;

	if (!pl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pl->cfg = c;
	pl->n_workers = p->n_workers;
	pl->max_flows = p->max_flows;
	pl->req = p->req;
	pl->ver = p->ver;
	pl->txrec_pool = p->txrec_pool;
	pl->st = &ctl_stats[0];
	pl->sess = calloc((size_t)p->n_workers * p->max_flows, sizeof(*pl->sess));
	if (!pl->sess) {
		snprintf(err, errlen, "out of memory for %u sessions", p->n_workers * p->max_flows);
		goto fail;
	}
	pl->reqs = calloc(RDNS_INFLIGHT, sizeof(*pl->reqs));
	pl->req_free = calloc(RDNS_INFLIGHT, sizeof(*pl->req_free));
	if (!pl->reqs || !pl->req_free) {
		snprintf(err, errlen, "out of memory for %u lookups", RDNS_INFLIGHT);
		goto fail;
	}
	for (i = 0; i < RDNS_INFLIGHT; i++)
		pl->req_free[pl->n_req_free++] = &pl->reqs[i];
	if (open_log(pl, err, errlen) < 0)
		goto fail;

	for (i = 0; i < c->n_dns_servers; i++)
		servers[i] = c->dns_servers[i];
	rp.servers = servers;
	rp.n_servers = c->n_dns_servers;
	rp.trust_anchor = c->dns_trust_anchor[0] ? c->dns_trust_anchor : NULL;
	pl->ub = dns_resolver_create(&rp, err, errlen);
	if (!pl->ub)
		goto fail;
	dp.ub = pl->ub;
	dp.timeout_ms = c->dns_timeout_ms;
	dp.max_names = RDNS_MAX_NAMES;
	dp.cache_entries = PTR_CACHE_ENTRIES;
	dp.cache_ttl_s = PTR_CACHE_TTL_S;
	dp.max_inflight = RDNS_INFLIGHT;
	pl->rdns = rdns_create(&dp);
	if (!pl->rdns) {
		snprintf(err, errlen, "reverse DNS: %s", strerror(errno));
		goto fail;
	}
	pl->auth = auth_create(pl->ub, c->hostname, c->dns_timeout_ms, err, errlen);
	if (!pl->auth)
		goto fail;
	if (c->spool_dir[0]) {
		struct spool_params sp = { .stall_s = c->fault_spool_stall_s,
					   .on_group = spool_group_done };

		pl->spool = spool_open(c->spool_dir, c->hostname, &sp, err, errlen);
		if (!pl->spool)
			goto fail;
	} else {
		struct relay_params rp2 = {
			.target = c->relay_target,
			.lmtp = c->relay_protocol == RELAY_LMTP,
			.helo = c->hostname,
			.pool_size = c->control_threads,
		};

		pl->relay = relay_create(&rp2, err, errlen);
		if (!pl->relay)
			goto fail;
	}
	pl->jobs = rte_ring_create(
		"ctl_jobs", JOB_RING_SIZE, rte_socket_id(), RING_F_SP_ENQ | RING_F_MC_HTS_DEQ);
	if (!pl->jobs) {
		snprintf(err, errlen, "job ring: %s", rte_strerror(rte_errno));
		goto fail;
	}
	for (i = 0; i < c->control_threads && i < CTLPLANE_MAX_THREADS - 2; i++) {
		char name[16];

		snprintf(name, sizeof(name), "se-work-%u", i);
		pl->thread_args[i] = (struct work_arg){ .pl = pl, .idx = i + 1 };
		if (rte_ctrl_thread_create(&pl->threads[i], name, NULL, work_thread,
					   &pl->thread_args[i]) != 0) {
			snprintf(err, errlen, "cannot start control thread %u", i);
			goto fail;
		}
		pl->n_threads++;
	}
	return pl;
fail:
	ctlplane_destroy(pl);
	return NULL;
}

void
ctlplane_destroy(struct ctlplane *pl)
{
	unsigned i;
	void *jp;

	if (!pl)
		return;
	atomic_store(&pl->stop, true);
	for (i = 0; i < pl->n_threads; i++)
		pthread_join(pl->threads[i], NULL);
	/* No more submissions: what the spool holds is committed and answered. */
	spool_close(pl->spool);
	if (pl->jobs) {
		while (rte_ring_dequeue(pl->jobs, &jp) == 0) {
			spf_unref(((struct job *)jp)->spf);
			free(jp);
		}
		rte_ring_free(pl->jobs);
	}
	if (pl->sess)
		for (i = 0; i < pl->n_workers * pl->max_flows; i++)
			spf_unref(pl->sess[i].spf);
	rdns_destroy(pl->rdns);
	auth_destroy(pl->auth);
	relay_destroy(pl->relay);
	if (pl->ub)
		dns_resolver_destroy(pl->ub);
	if (pl->log_owned)
		fclose(pl->log);
	free(pl->sess);
	free(pl->req_free);
	free(pl->reqs);
	free(pl);
}
