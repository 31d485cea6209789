/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/ctlplane.c — the control plane: the dispatcher and the work threads
 * (see ctlplane.h).
 *
 * Waking: the workers never make a system call for the control plane. The
 * dispatcher polls the request rings and dnsq's fd (every DNS query, PTR,
 * SPF and DKIM keys, goes through the one dnsq): while it finds
 * work it does not sleep; when idle it waits in poll() for at most 1 ms,
 * which is also the worst latency it adds (the workers cannot wake it: that
 * would be a system call).
 *
 * A work thread that finds the job ring empty spins a few microseconds,
 * then sleeps on a futex until a job is queued, and costs nothing while
 * idle. The futex word is a sequence the enqueuer bumps: the thread reads
 * it, announces itself in the count of sleepers, re-checks the ring (and
 * stop), and only then waits for the word to change, so a job queued at
 * any point of that is seen or wakes it. The dispatcher, the only one to
 * queue jobs, loads that count after each job and makes the one system
 * call, waking one thread, only when someone sleeps: none while every
 * thread is busy. A futex rather than a condition variable (the enqueuer
 * would take its mutex on every job) or an eventfd (a read and a write per
 * sleep, and poll() wakes every waiter): it wakes exactly one thread and
 * needs no lock.
 *
 * What the control plane keeps per session is one slot per worker session
 * slot (generation, PTR result and name, the transaction's SPF check): written
 * by the dispatcher only, and overwritten when the worker reuses the slot.
 *
 * SPF starts at MAIL FROM and runs on the dispatcher itself, without a
 * thread: the check is a resumable evaluation (auth/spf.h) whose queries go
 * out through dns/dnsq.h; each answer that comes back runs one more pass
 * (microseconds), until a pass needs nothing more. The check hangs off the
 * session's slot, named by the transaction it was asked for. At the end of
 * DATA the delivery takes the result when it is there; when it is not, the
 * delivery is parked on the check and goes to a work thread only once the
 * result is in (the check's 20 s budget bounds the wait). So a work thread
 * only ever runs a delivery whose SPF is done, and a slow domain holds
 * nothing but its own check.
 *
 * DKIM's key records are fetched the same way, and as early: when a
 * worker says a message's header block is in (MSG_DKIM_HEADERS, while the
 * body still arrives), the dispatcher reads the DKIM-Signature fields of
 * exactly those bytes (checks.h; the chain is lent, common/chunk.h) and
 * issues their TXT queries at once, each with dns_timeout_ms; the fetch
 * hangs off the session's slot, named by its transaction, as the SPF check
 * does, and a new MAIL, RSET, the end of the session or the body handed
 * back unsent (MSG_BODY_RETURN, whose chain the dispatcher frees) lets go
 * of it. The delivery request takes the fetch of its own transaction, in
 * flight or answered; without one (a ring that was full, the bounds of
 * KEY_EARLY_MAX and KEY_EARLY_QUERIES), it reads the header block and
 * fetches then. The delivery goes to a work thread when its SPF result is in and every key query is answered, failed or timed
 * out; the work thread verifies from those answers alone (a key not among
 * them is a temperror), so it never waits on DNS either.
 *
 * A signed message's body is hashed as it arrives, on the dispatcher, with
 * time it would otherwise sleep: the early fetch of a header block that
 * names keys also begins a DKIM job on it (checks.h, auth_hash); each time
 * the worker says more of the body is final (MSG_BODY_FINAL, a chunk
 * filled) the fetch notes it and joins a FIFO, and whenever a round of the
 * loop finds no request the dispatcher feeds the first job of the FIFO one
 * step (HASH_STEP bytes: libopendkim's canonicalization and SHA-256, some
 * tens of microseconds, about a hundred with relaxed body
 * canonicalization), then puts it back at the end if more is final. So a
 * busy dispatcher spends nothing on it, and what it did not hash the work
 * thread hashes at the end of DATA as before; a message whose body fits in
 * one chunk has nothing hashed early. The job lives
 * with the fetch: the delivery takes both to its work thread, which feeds
 * only the rest (the tail chunk) and verifies; whatever lets go of the
 * fetch frees the job. Because the job is fed on the same thread that
 * reads the ring, in ring order, it is never running when the chain comes
 * back (MSG_BODY_RETURN) or the delivery takes it: nothing waits for it
 * and nothing is freed under it. A session has at most one live check (a new
 * MAIL cancels the last one), and the checks in flight are bounded by
 * [control] max_spf_checks: at the bound the dispatcher raises a flag that
 * the workers read at MAIL, and answer 451 4.7.26 until it drops.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <unbound.h>

#include "dns/dnsq.h"
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
#define BURST             32
/* Jobs waiting for a work thread (rte_ring wants a power of two). When it is
 * full a delivery is answered 451, so the size only bounds the backlog that
 * memory holds, one malloc'd job each. */
#define JOB_RING_SIZE     65536
/* A work thread that finds no job polls the ring this long before it
 * sleeps: jobs a few microseconds apart find it awake. */
#define WORK_SPIN_US      5
/* DNS queries the SPF checks may have out at once, per check allowed in
 * flight: a pass rarely asks for more than a handful together. */
#define SPF_QUERIES_EACH  32
#define SPF_QUERIES_MIN   4096
/* DKIM key queries out at once, on top of those (a fetch that finds none
 * left counts its key missing: temperror). */
#define KEY_QUERIES       4096
/* Key fetches begun at a header block's end and held by session slots at
 * once, and their queries out at once: past either, a message's keys wait
 * for its delivery request, as they would without (dkim_keys_early_skipped).
 * A fetch holds a few hundred bytes and at most AUTH_MAX_SIGS queries; the
 * early ones may take half of KEY_QUERIES, so that sessions stalled after
 * their header block never leave the deliveries without queries. */
#define KEY_EARLY_MAX     4096
#define KEY_EARLY_QUERIES (KEY_QUERIES / 2)
/* Their counters: dkim_keys_early (fetches of signed messages begun at the
 * end of the header block, while the body arrives), dkim_keys_early_used
 * (deliveries that found theirs), dkim_keys_early_skipped (none begun: at
 * a bound above), dkim_keys_early_dropped (let go by a new MAIL, RSET, the
 * session's end or the body handed back, without a delivery), and
 * bodies_returned (chunks of lent bodies whose transaction ended without a
 * delivery, freed by the dispatcher), dkim_hash_jobs (signed messages whose
 * body is hashed as it arrives: one per early fetch whose header block has
 * a signature to verify) and dkim_body_bytes_early (body bytes hashed
 * before the end of DATA). */
/* Body bytes one idle round of the dispatcher hashes for one message: about
 * a chunk, so a request that arrives meanwhile waits at most that long. */
#define HASH_STEP         8192u
/* The reverse-DNS result cache: results kept (a set-associative table of
 * 288-byte entries, about 19 MB) and for how long at most, so that a client
 * that reconnects is not looked up again, and a PTR record fixed by its owner
 * is seen within 5 minutes whatever its TTL. */
#define PTR_CACHE_ENTRIES 65536
#define PTR_CACHE_TTL_S   300

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

struct job;

/* One query of a check out on the resolver: the callback's argument. It
 * stays put (the check keeps an array of pointers to them) until the check
 * is freed. */
struct spf_qref {
	struct spf_chk *c;
	unsigned id;     /* the evaluation's query id */
	uint64_t handle; /* dnsq's, while out; 0 once answered */
};

/* An SPF check on the dispatcher: begun at MAIL FROM (or, when that
 * request was lost, at the end of DATA), for the session's transaction
 * txn. The session's slot holds it until the end of DATA takes it; a
 * delivery that finds it unfinished parks on it. */
struct spf_chk {
	struct ctlplane *pl;
	struct spf_eval *ev; /* NULL once done */
	uint32_t txn;
	bool early; /* begun at MAIL */
	bool done;
	struct auth_spf result;
	struct job *parked;            /* the delivery waiting for the result */
	struct spf_chk *pprev, *pnext; /* the parked checks' list */
	bool dead;                     /* done and parked: to be freed */
	struct spf_qref **refs;
	unsigned nrefs, caprefs;
};

struct ctl_sess {
	uint32_t gen;
	uint8_t ptr;
	char ptr_name[256];
	struct spf_chk *spf;    /* the current transaction's, or NULL */
	struct key_fetch *keys; /* its DKIM keys fetched early, or NULL */
	uint32_t refused_txn;   /* the MAIL refused at the bound, or 0 */
};
/* The configuration sizes flows with this (common/sizing.h). */
_Static_assert(sizeof(struct ctl_sess) <= SIZING_CTL_SLOT_BYTES, "ctl_sess outgrew its sizing");

static struct spf_chk *spf_chk_drop(struct ctlplane *pl, struct spf_chk *c);
static void key_early_drop(struct ctlplane *pl, struct ctl_sess *cs);

#define RDNS_INFLIGHT 16384 /* lookups the resolver holds at once */
/* The PTR and forward queries go in a dnsq lane of their own, as many
 * slots as the lookups can have out (rdns.h): SPF's queries cannot take
 * them, nor they SPF's. */
#define RDNS_LANE     1

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
	struct dnsq *dnsq;         /* every query: SPF's, DKIM keys', rdns's */
	uint32_t spf_inflight;     /* checks not done */
	uint32_t max_spf;          /* [control] max_spf_checks */
	volatile uint8_t spf_full; /* read by the workers at MAIL */
	struct spf_chk *parked;    /* checks a delivery waits for */
	struct key_fetch *kparked; /* key fetches a delivery waits for */
	uint32_t early_n;          /* key fetches held by slots */
	uint32_t early_queries;    /* ...and their queries out */
	/* Early fetches with body bytes final but not yet hashed, first to be
	 * fed first (struct key_fetch's hprev/hnext). */
	struct key_fetch *hash_head, *hash_tail;
	struct spool *spool;
	struct relay *relay;
	FILE *log;
	bool log_owned;
	struct rte_ring *jobs; /* dispatcher -> work threads */
	atomic_uint work_seq;  /* the futex word: bumped to wake sleepers */
	atomic_uint sleepers;  /* work threads announced asleep */
	atomic_bool stop;
	unsigned n_threads;
	pthread_t threads[CTLPLANE_MAX_THREADS - 2];
	struct work_arg thread_args[CTLPLANE_MAX_THREADS - 2];
	struct ctl_stats *st; /* the dispatcher's block */
};

/* One key query of a delivery out on the resolver: the callback's
 * argument. */
struct key_qref {
	struct key_fetch *f;
	unsigned i;      /* the name's index in the key set */
	uint64_t handle; /* dnsq's, while out; 0 once answered */
};

/* A delivery's DKIM key records, fetched on the dispatcher. Once nothing
 * is pending it goes with the job to a work thread, which frees it. */
struct key_fetch {
	struct ctlplane *pl;
	struct dkim_keys *keys;
	struct key_qref *refs; /* one per name */
	unsigned pending;      /* queries still out */
	struct job *parked;    /* the delivery, SPF done, waiting for the keys */
	struct key_fetch *pprev, *pnext;
	uint32_t txn; /* begun early: the transaction it is for */
	bool held;    /* held by a slot: its queries count as early */
	/* A signed message's body hashed as it arrives, on the dispatcher,
	 * until the delivery takes it to a work thread; NULL: the work
	 * thread verifies the message whole. */
	struct auth_hash *hash;
	uint32_t final; /* body bytes the worker says are final */
	bool hlisted;   /* on the ctlplane's hash FIFO */
	struct key_fetch *hprev, *hnext;
};

/* A job for a work thread: a message to check and hand on for a worker's
 * session, with its SPF result and its DKIM keys. */
struct job {
	struct auth_spf spf;
	struct key_fetch *keys; /* NULL: no keys (out of memory) */
	struct txrec *rec;
	uint32_t worker, idx, gen;
};

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
	cs->spf = spf_chk_drop(pl, cs->spf);
	key_early_drop(pl, cs);
	cs->refused_txn = 0;
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

static void
work_wake(struct ctlplane *pl, int n)
{
	atomic_fetch_add(&pl->work_seq, 1);
	syscall(SYS_futex, &pl->work_seq, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static bool
queue_job(struct ctlplane *pl, const struct job *j)
{
	struct job *jp = malloc(sizeof(*jp));

	if (!jp)
		return false;
	*jp = *j;
	if (rte_ring_enqueue(pl->jobs, jp) == 0) {
		/* The job is in before the count is read, as a sleeper
		 * announces itself before it re-checks the ring: one of the
		 * two sees the other. */
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&pl->sleepers, memory_order_relaxed) != 0)
			work_wake(pl, 1);
		return true;
	}
	free(jp);
	return false;
}

/* --- DKIM keys fetched on the dispatcher --- */

/* Withdraws what is still out and frees the fetch (not its parked job). */
static struct key_fetch *
key_fetch_free(struct key_fetch *f)
{
	unsigned i;

	if (!f)
		return NULL;
	for (i = 0; f->refs && i < dkim_keys_count(f->keys); i++)
		if (f->refs[i].handle != 0)
			dnsq_cancel(f->pl->dnsq, f->refs[i].handle);
	free(f->refs);
	dkim_keys_free(f->keys);
	auth_hash_free(f->hash);
	free(f);
	return NULL;
}

/* A job that will not reach a work thread lets go of its keys. */
static void
job_discard(struct job *j)
{
	if (j)
		j->keys = key_fetch_free(j->keys);
}

static void deliver_queue(struct ctlplane *pl, const struct job *j);
static void deliver_refuse(struct ctlplane *pl, const struct job *j, uint16_t code, const char *enh,
			   const char *text);

static void
key_unpark(struct ctlplane *pl, struct key_fetch *f)
{
	if (f->pprev)
		f->pprev->pnext = f->pnext;
	else
		pl->kparked = f->pnext;
	if (f->pnext)
		f->pnext->pprev = f->pprev;
	f->pprev = f->pnext = NULL;
	f->parked = NULL;
}

static void
key_on_answer(void *arg, int err, struct ub_result *res)
{
	struct key_qref *ref = arg;
	struct key_fetch *f = ref->f;
	struct job *j;

	ref->handle = 0;
	if (f->held)
		f->pl->early_queries--;
	if (err == DNSQ_TIMEOUT)
		dkim_keys_timeout(f->keys, ref->i);
	else
		dkim_keys_answer(f->keys, ref->i, err, res);
	if (--f->pending > 0 || !f->parked)
		return;
	/* the last key of a delivery whose SPF is done: it goes now (and f
	 * with it: not to be touched after) */
	j = f->parked;
	key_unpark(f->pl, f);
	deliver_queue(f->pl, j);
	free(j);
}

/* The key records named in keys, their queries issued; NULL out of
 * memory (the verification then finds every key missing). */
static struct key_fetch *
key_fetch_issue(struct ctlplane *pl, struct dkim_keys *keys)
{
	struct key_fetch *f = calloc(1, sizeof(*f));
	unsigned i, n;

	if (!f) {
		dkim_keys_free(keys);
		return NULL;
	}
	f->pl = pl;
	f->keys = keys;
	n = dkim_keys_count(f->keys);
	if (!f->keys || (n && !(f->refs = calloc(n, sizeof(*f->refs)))))
		return key_fetch_free(f);
	for (i = 0; i < n; i++) {
		f->refs[i] = (struct key_qref){ .f = f, .i = i };
		f->refs[i].handle = dnsq_issue(
			pl->dnsq, dkim_keys_name(f->keys, i), 16 /* TXT */, pl->cfg->dns_timeout_ms,
			key_on_answer, &f->refs[i], now_us());
		if (f->refs[i].handle == 0) {
			dkim_keys_answer(f->keys, i, UB_NOMEM, NULL);
			continue;
		}
		f->pending++;
		pl->st->c[CTL_DKIM_KEY_QUERIES]++;
	}
	return f;
}

/* The key records of the message in r, read from its whole chain. */
static struct key_fetch *
key_fetch_start(struct ctlplane *pl, const struct txrec *r)
{
	return key_fetch_issue(pl, auth_dkim_keys(pl->auth, r->body));
}

/* The hash FIFO: a fetch joins at the end when more of its body is final
 * than it has hashed, and leaves when it is fed, taken or dropped. */
static void
hash_list(struct ctlplane *pl, struct key_fetch *f)
{
	if (f->hlisted)
		return;
	f->hlisted = true;
	f->hnext = NULL;
	f->hprev = pl->hash_tail;
	if (pl->hash_tail)
		pl->hash_tail->hnext = f;
	else
		pl->hash_head = f;
	pl->hash_tail = f;
}

static void
hash_unlist(struct ctlplane *pl, struct key_fetch *f)
{
	if (!f->hlisted)
		return;
	f->hlisted = false;
	if (f->hprev)
		f->hprev->hnext = f->hnext;
	else
		pl->hash_head = f->hnext;
	if (f->hnext)
		f->hnext->hprev = f->hprev;
	else
		pl->hash_tail = f->hprev;
	f->hprev = f->hnext = NULL;
}

/* One step of the first job waiting: true when it hashed something. */
static bool
hash_step(struct ctlplane *pl)
{
	struct key_fetch *f = pl->hash_head;
	uint32_t fed, upto;

	if (!f)
		return false;
	hash_unlist(pl, f);
	fed = auth_hash_fed(f->hash);
	upto = f->final - fed > HASH_STEP ? fed + HASH_STEP : f->final;
	pl->st->c[CTL_DKIM_BODY_EARLY] += auth_hash_feed(f->hash, upto);
	if (auth_hash_fed(f->hash) < f->final)
		hash_list(pl, f);
	return true;
}

/* The slot lets go of its early fetch (its queries withdrawn). */
static void
key_early_drop(struct ctlplane *pl, struct ctl_sess *cs)
{
	if (cs->keys == NULL)
		return;
	hash_unlist(pl, cs->keys);
	pl->early_queries -= cs->keys->pending;
	cs->keys = key_fetch_free(cs->keys);
	pl->early_n--;
	pl->st->c[CTL_DKIM_EARLY_DROPPED]++;
}

/* The slot's early fetch when it is transaction txn's (taken from the
 * slot), else NULL, any other dropped. */
static struct key_fetch *
key_early_take(struct ctlplane *pl, struct ctl_sess *cs, uint32_t txn)
{
	struct key_fetch *f = cs->keys;

	if (f == NULL || f->txn != txn) {
		key_early_drop(pl, cs);
		return NULL;
	}
	hash_unlist(pl, f);
	cs->keys = NULL;
	pl->early_n--;
	pl->early_queries -= f->pending;
	f->held = false;
	return f;
}

/* A header block is in while its body still arrives: its keys are fetched
 * now, from exactly those bytes (the chain is the worker's, lent). */
static void
on_dkim_headers(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct key_fetch *f;

	if (!cs || cs->gen != m->gen)
		return;
	key_early_drop(pl, cs);
	if (pl->early_n >= KEY_EARLY_MAX || pl->early_queries + AUTH_MAX_SIGS > KEY_EARLY_QUERIES) {
		pl->st->c[CTL_DKIM_EARLY_SKIPPED]++;
		return;
	}
	f = key_fetch_issue(pl, auth_dkim_keys_head(pl->auth, m->u.hdrs.body, m->u.hdrs.len));
	if (!f)
		return;
	f->txn = m->txn;
	f->held = true;
	cs->keys = f;
	pl->early_n++;
	pl->early_queries += f->pending;
	if (dkim_keys_count(f->keys) == 0)
		return;
	pl->st->c[CTL_DKIM_KEYS_EARLY]++;
	f->hash = auth_hash_begin(pl->auth, m->u.hdrs.body, m->u.hdrs.len);
	pl->st->c[CTL_DKIM_HASH_JOBS] += f->hash != NULL;
}

/* More of a lent body is final: a signed message's job will hash it when
 * the dispatcher has a round to spare. A message of another transaction,
 * or with no job, changes nothing. */
static void
on_body_final(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct key_fetch *f;

	if (!cs || cs->gen != m->gen || !cs->keys || cs->keys->txn != m->txn || !cs->keys->hash)
		return;
	f = cs->keys;
	if (m->u.hdrs.len > f->final)
		f->final = m->u.hdrs.len;
	if (auth_hash_fed(f->hash) < f->final)
		hash_list(pl, f);
}

/* A lent body whose transaction ended without a delivery: read (its
 * MSG_DKIM_HEADERS came first on this ring), so freed here. The chain may
 * hold several bodies, linked by the worker. */
static void
on_body_return(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct chunk *c = m->u.hdrs.body, *next;

	if (cs && cs->gen == m->gen && cs->keys && cs->keys->txn == m->txn)
		key_early_drop(pl, cs);
	for (; c != NULL; c = next) {
		next = c->next;
		rte_mempool_put(rte_mempool_from_obj(c), c);
		pl->st->c[CTL_BODIES_RETURNED]++;
	}
}

/* A delivery whose SPF is done: to the work threads once its keys are in,
 * parked on them until then. */
static void
deliver_ready(struct ctlplane *pl, const struct job *j)
{
	struct key_fetch *f = j->keys;

	if (!f || f->pending == 0) {
		deliver_queue(pl, j);
		return;
	}
	f->parked = malloc(sizeof(*f->parked));
	if (!f->parked) {
		struct job copy = *j;

		job_discard(&copy);
		pl->st->c[CTL_SPOOL_FAILED]++;
		deliver_refuse(pl, &copy, 451, "4.3.0",
			       "Temporary local problem, message not queued, try again later");
		return;
	}
	*f->parked = *j;
	f->pnext = pl->kparked;
	if (pl->kparked)
		pl->kparked->pprev = f;
	pl->kparked = f;
	pl->st->c[CTL_DKIM_PARKED]++;
}

/* At the end: the deliveries still waiting for their keys. */
static void
key_parked_free(struct ctlplane *pl)
{
	while (pl->kparked) {
		struct key_fetch *f = pl->kparked;
		struct job *j = f->parked;

		key_unpark(pl, f);
		job_discard(j);
		free(j);
	}
}

/* --- SPF checks on the dispatcher --- */

static void
spf_publish(struct ctlplane *pl)
{
	pl->st->c[CTL_SPF_INFLIGHT] = pl->spf_inflight;
	pl->spf_full = pl->spf_inflight >= pl->max_spf;
}

/* Withdraws the check's queries still out and frees it (and a delivery
 * parked on it: only at the end). */
static void
spf_chk_free(struct ctlplane *pl, struct spf_chk *c)
{
	unsigned i;

	for (i = 0; i < c->nrefs; i++) {
		if (c->refs[i]->handle != 0)
			dnsq_cancel(pl->dnsq, c->refs[i]->handle);
		free(c->refs[i]);
	}
	free(c->refs);
	if (c->ev != NULL) {
		spf_eval_free(c->ev);
		pl->spf_inflight--;
		spf_publish(pl);
	}
	job_discard(c->parked);
	free(c->parked);
	free(c);
}

/* The slot lets go of its check: a new MAIL, a new session. A check not
 * done yet is cancelled. Returns NULL. */
static struct spf_chk *
spf_chk_drop(struct ctlplane *pl, struct spf_chk *c)
{
	if (c == NULL)
		return NULL;
	if (!c->done)
		pl->st->c[CTL_SPF_CANCELLED]++;
	spf_chk_free(pl, c);
	return NULL;
}

static void
spf_unpark(struct ctlplane *pl, struct spf_chk *c)
{
	if (c->pprev)
		c->pprev->pnext = c->pnext;
	else
		pl->parked = c->pnext;
	if (c->pnext)
		c->pnext->pprev = c->pprev;
	c->pprev = c->pnext = NULL;
	c->parked = NULL;
}

/* At the end, as for the jobs still queued: the checks deliveries wait
 * for. */
static void
spf_parked_free(struct ctlplane *pl)
{
	while (pl->parked) {
		struct spf_chk *c = pl->parked;

		job_discard(c->parked);
		free(c->parked);
		spf_unpark(pl, c);
		spf_chk_free(pl, c);
	}
}

/* The reply for a delivery that cannot go on: to the worker at once. */
static void
deliver_refuse(struct ctlplane *pl, const struct job *j, uint16_t code, const char *enh,
	       const char *text)
{
	struct ctl_msg v = { .kind = MSG_SPOOL_DONE, .idx = j->idx, .gen = j->gen, .result = 1 };
	struct txrec *r = j->rec;

	r->reply_code = code;
	snprintf(r->reply_enh, sizeof(r->reply_enh), "%s", enh);
	snprintf(r->reply_text, sizeof(r->reply_text), "%s", text);
	v.u.rec = r;
	send_verdict(pl, j->worker, &v, pl->st);
}

/* A delivery whose SPF is done, to the work threads. One job object per
 * request, from the heap: the control plane may allocate, and the ring
 * carries pointers. */
static void
deliver_queue(struct ctlplane *pl, const struct job *j)
{
	struct job copy = *j;

	if (queue_job(pl, j))
		return;
	/* No room for the job: the sender gets a 451, not a 250. */
	job_discard(&copy);
	pl->st->c[CTL_SPOOL_FAILED]++;
	deliver_refuse(pl, &copy, 451, "4.3.0",
		       "Temporary local problem, message not queued, try again later");
}

static void
spf_count_passes(struct ctlplane *pl, unsigned passes)
{
	static const unsigned bounds[] = { 1, 2, 4, 8, 16 };
	unsigned i;

	pl->st->c[CTL_SPF_PASSES] += passes;
	if (passes > pl->st->c[CTL_SPF_PASSES_MAX])
		pl->st->c[CTL_SPF_PASSES_MAX] = passes;
	for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		if (passes <= bounds[i])
			break;
	pl->st->c[CTL_SPF_PASSES_1 + i]++;
}

/* The result is in: the evaluation goes, the result stays for the
 * delivery; a parked delivery goes to the work threads now. */
static void
spf_chk_finish(struct ctlplane *pl, struct spf_chk *c)
{
	struct job *j = c->parked;
	unsigned i;

	auth_spf_result(c->ev, &c->result);
	spf_count_passes(pl, spf_eval_passes(c->ev));
	pl->st->c[CTL_SPF_LOOKUPS] += spf_eval_lookups(c->ev);
	if (c->early)
		pl->st->c[CTL_SPF_CHECKS]++;
	for (i = 0; i < c->nrefs; i++)
		if (c->refs[i]->handle != 0) {
			dnsq_cancel(pl->dnsq, c->refs[i]->handle);
			c->refs[i]->handle = 0;
		}
	c->ev = spf_eval_free(c->ev);
	c->done = true;
	pl->spf_inflight--;
	spf_publish(pl);
	if (j != NULL) {
		spf_unpark(pl, c);
		j->spf = c->result;
		deliver_ready(pl, j);
		free(j);
		c->dead = true; /* nobody holds it: freed as the stack unwinds */
	}
}

static void spf_on_answer(void *arg, int err, struct ub_result *res);

/* Issues one query of the check; false when it could not go out (the
 * evaluation then has its failure already). */
static bool
spf_issue(struct ctlplane *pl, struct spf_chk *c, const struct spf_dns_query *q)
{
	struct spf_qref *ref = malloc(sizeof(*ref));

	if (ref != NULL && c->nrefs == c->caprefs) {
		unsigned cap = c->caprefs ? c->caprefs * 2 : 8;
		struct spf_qref **grown = realloc(c->refs, cap * sizeof(*grown));

		if (grown == NULL) {
			free(ref);
			ref = NULL;
		} else {
			c->refs = grown;
			c->caprefs = cap;
		}
	}
	if (ref == NULL) {
		spf_eval_answer(c->ev, q->id, UB_NOMEM, NULL);
		return false;
	}
	*ref = (struct spf_qref){ .c = c, .id = q->id };
	ref->handle = dnsq_issue(pl->dnsq, q->name, q->type, q->timeout_ms, spf_on_answer, ref,
				 now_us());
	if (ref->handle == 0) {
		free(ref);
		spf_eval_answer(c->ev, q->id, UB_NOMEM, NULL);
		return false;
	}
	c->refs[c->nrefs++] = ref;
	return true;
}

/* Runs passes until the check is done or waits for an answer. */
static void
spf_advance(struct ctlplane *pl, struct spf_chk *c)
{
	struct spf_dns_query q;
	bool failed;

	for (;;) {
		if (spf_eval_step(c->ev) == SPF_STEP_DONE) {
			spf_chk_finish(pl, c);
			return;
		}
		failed = false;
		while (spf_eval_next_query(c->ev, &q))
			if (!spf_issue(pl, c, &q))
				failed = true;
		/* a query that could not go out is answered already: the next
		 * pass may not need to wait */
		if (!failed && spf_eval_waiting(c->ev) > 0)
			return;
	}
}

static void
spf_on_answer(void *arg, int err, struct ub_result *res)
{
	struct spf_qref *ref = arg;
	struct spf_chk *c = ref->c;

	ref->handle = 0;
	if (c->done) { /* cannot happen: done withdraws every query */
		ub_resolve_free(res);
		return;
	}
	if (err == DNSQ_TIMEOUT)
		spf_eval_timeout(c->ev, ref->id);
	else
		spf_eval_answer(c->ev, ref->id, err, res);
	spf_advance(c->pl, c);
	if (c->dead)
		spf_chk_free(c->pl, c);
}

/* A check for the transaction in r; NULL at the bound (counted) or out of
 * memory. It may be done when it returns. */
static struct spf_chk *
spf_chk_start(struct ctlplane *pl, const struct txrec *r, bool early)
{
	struct spf_chk *c;

	if (pl->spf_inflight >= pl->max_spf) {
		pl->st->c[CTL_SPF_REFUSED]++;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->ev = auth_spf_start(pl->auth, r->family, r->addr, r->helo, r->mail_from);
	if (c->ev == NULL) {
		free(c);
		return NULL;
	}
	c->pl = pl;
	c->txn = r->txn;
	c->early = early;
	pl->spf_inflight++;
	spf_publish(pl);
	spf_advance(pl, c);
	return c;
}

static void
on_spf(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct txrec *r = m->u.rec;

	if (cs && cs->gen == m->gen) {
		/* a new MAIL: the last transaction's check is of no use */
		cs->spf = spf_chk_drop(pl, cs->spf);
		key_early_drop(pl, cs);
		cs->spf = spf_chk_start(pl, r, true);
		cs->refused_txn = cs->spf == NULL ? r->txn : 0;
	}
	rte_mempool_put(pl->txrec_pool, r);
}

/* The transaction ended without a message: its check, if the slot still
 * holds that transaction's, is of no use. */
static void
on_spf_cancel(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);

	if (!cs || cs->gen != m->gen)
		return;
	if (cs->spf && cs->spf->txn == m->txn)
		cs->spf = spf_chk_drop(pl, cs->spf);
	if (cs->keys && cs->keys->txn == m->txn)
		key_early_drop(pl, cs);
}

static const char spf_busy_text[] = "Too many SPF checks in progress, try again later";

static void
on_spool(struct ctlplane *pl, uint32_t worker, const struct ctl_msg *m)
{
	struct job j = { .rec = m->u.rec, .worker = worker, .idx = m->idx, .gen = m->gen };
	struct ctl_sess *cs = sess_at(pl, worker, m->idx);
	struct spf_chk *c = NULL;
	struct key_fetch *early = NULL;

	pl->st->c[CTL_SPOOL_REQUESTS]++;
	fill_ptr_name(pl, worker, m);
	if (cs && cs->gen == m->gen) {
		c = cs->spf; /* the delivery takes the slot's check */
		cs->spf = NULL;
		early = key_early_take(pl, cs, m->u.rec->txn);
		/* its MAIL met the bound: the sender tries again later */
		if (!c && cs->refused_txn != 0 && cs->refused_txn == m->u.rec->txn) {
			cs->refused_txn = 0;
			key_fetch_free(early);
			deliver_refuse(pl, &j, 451, "4.7.26", spf_busy_text);
			return;
		}
	}
	/* Only this transaction's own check will do: when its request was
	 * lost, the slot holds an earlier MAIL's (or none), and a check for
	 * this transaction starts now. */
	if (c && c->txn != m->u.rec->txn)
		c = spf_chk_drop(pl, c);
	if (!c) {
		pl->st->c[CTL_SPF_LATE]++;
		c = spf_chk_start(pl, m->u.rec, false);
		if (!c) {
			key_fetch_free(early);
			deliver_refuse(pl, &j, 451, "4.7.26", spf_busy_text);
			return;
		}
	}
	/* the keys, fetched since the header block came, or now while the
	 * check runs */
	if (early)
		pl->st->c[CTL_DKIM_EARLY_USED] += dkim_keys_count(early->keys) > 0;
	j.keys = early ? early : key_fetch_start(pl, m->u.rec);
	if (c->done) {
		j.spf = c->result;
		spf_chk_free(pl, c);
		deliver_ready(pl, &j);
		return;
	}
	/* not done yet: the delivery waits on the check, not on a thread */
	c->parked = malloc(sizeof(*c->parked));
	if (!c->parked) {
		job_discard(&j);
		spf_chk_drop(pl, c);
		pl->st->c[CTL_SPOOL_FAILED]++;
		deliver_refuse(pl, &j, 451, "4.3.0",
			       "Temporary local problem, message not queued, try again later");
		return;
	}
	*c->parked = j;
	c->pnext = pl->parked;
	if (pl->parked)
		pl->parked->pprev = c;
	pl->parked = c;
	pl->st->c[CTL_SPF_PARKED]++;
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
			case MSG_SPF_CANCEL: on_spf_cancel(pl, w, &msgs[i]); break;
			case MSG_DKIM_HEADERS: on_dkim_headers(pl, w, &msgs[i]); break;
			case MSG_BODY_RETURN: on_body_return(pl, w, &msgs[i]); break;
			case MSG_BODY_FINAL: on_body_final(pl, w, &msgs[i]); break;
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
	struct pollfd pfd = { .fd = dnsq_fd(pl->dnsq), .events = POLLIN };
	unsigned did;
	bool wrote;
	uint64_t now;

	while (!*stop) {
		did = drain_requests(pl);
		wrote = did > 0;
		/* A round with no request hashes a step of a body instead
		 * of sleeping. */
		if (did == 0 && !hash_step(pl) && poll(&pfd, 1, 1) < 0 && errno != EINTR)
			break;
		now = now_us();
		dnsq_process(pl->dnsq, now);
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

/* A message in the spool's (or the relay's) hands: what its done call
 * needs to answer the worker. The txrec and its chunks stay alive until then (they are the
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

/* The relay writes its counters straight into the block, in its order. */
_Static_assert(CTL_RELAY_QUEUED - CTL_RELAY_CONN_OPENED == RELAY_QUEUED - RELAY_CONN_OPENED &&
		       RELAY_QUEUED + 1 == RELAY__COUNTERS && RELAY_CONN_OPENED == 0,
	       "the relay's counters and CTL_COUNTERS disagree");

/* On the relay's thread, once the downstream has answered for the message. */
static void
relayed(void *arg, const struct relay_result *res)
{
	struct spooling *rl = arg;
	struct ctl_stats *st = &ctl_stats[CTLPLANE_RELAY_BLOCK];
	struct txrec *r = rl->rec;
	struct ctl_msg m = { .kind = MSG_SPOOL_DONE, .idx = rl->idx, .gen = rl->gen };
	char text[200];

	if (res->code / 100 == 2) {
		snprintf(text, sizeof(text), "Ok: queued as %s", r->queue_id);
		set_reply(r, 250, "2.0.0", text);
		st->c[CTL_RELAY_DELIVERED]++;
	} else {
		set_reply(r, res->code, res->enh, res->text);
		st->c[CTL_RELAY_FAILED]++;
	}
	free(rl->stripped);
	m.result = r->reply_code / 100 != 2;
	m.u.rec = r;
	send_verdict(rl->pl, rl->worker, &m, st);
	free(rl);
}

/* Our headers, then the message (without forged Authentication-Results),
 * to the spool or the downstream. True when the spool or the relay took
 * it: its done call answers the worker. */
static bool
hand_on(struct ctlplane *pl, const struct job *j, const struct auth_verdict *v,
	struct ctl_stats *st)
{
	char prefix[4096];
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
		struct spooling *rl = malloc(sizeof(*rl));
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
		/* The relay copies the envelope and the prefix; the body's
		 * chunks stay alive until relayed() answers the worker. */
		if (rl) {
			*rl = (struct spooling){ .pl = pl,
						 .rec = r,
						 .stripped = stripped,
						 .worker = j->worker,
						 .idx = j->idx,
						 .gen = j->gen };
			if (relay_submit(pl->relay, &rm, relayed, rl) == 0)
				return true;
			free(rl);
		}
		/* Out of memory, or an envelope the engine never passes. */
		set_reply(
			r, 451, "4.3.0",
			"Requested action aborted: local problem in processing, message not relayed");
		st->c[CTL_RELAY_FAILED]++;
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
	struct dkim_keys *keys;
	struct auth_hash *hash = NULL;

	memset(&v, 0, sizeof(v));
	r->spool_errno = 0;
	v.spf = j->spf; /* done on the dispatcher, for this transaction */
	keys = j->keys ? j->keys->keys : NULL;
	if (j->keys) { /* the rest of the body is hashed here */
		hash = j->keys->hash;
		j->keys->hash = NULL;
	}
	auth_verify_hashed(pl->auth, r->body, hash, keys, &r->auth_rule, r->family, &v);
	st->c[CTL_DKIM_KEYS_SERVED] += dkim_keys_served(keys);
	st->c[CTL_DKIM_KEYS_MISSING] += dkim_keys_missing(keys);
	j->keys = key_fetch_free(j->keys); /* nothing of it is out any more */
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

/* Waits for a job: a few microseconds awake, then asleep until one is
 * queued (or the plane stops). */
static void
work_idle(struct ctlplane *pl, struct ctl_stats *st)
{
	uint64_t until = now_us() + WORK_SPIN_US;
	unsigned seq;

	while (rte_ring_empty(pl->jobs)) {
		if (now_us() >= until)
			break;
		rte_pause();
	}
	if (!rte_ring_empty(pl->jobs))
		return;
	/* read the word first: a wake from here on changes it */
	seq = atomic_load(&pl->work_seq);
	atomic_fetch_add(&pl->sleepers, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (rte_ring_empty(pl->jobs) && !atomic_load(&pl->stop)) {
		syscall(SYS_futex, &pl->work_seq, FUTEX_WAIT_PRIVATE, seq, NULL, NULL, 0);
		st->c[CTL_WORK_WAKEUPS]++;
	}
	atomic_fetch_sub(&pl->sleepers, 1);
}

static void *
work_thread(void *arg)
{
	struct work_arg *wa = arg;
	struct ctlplane *pl = wa->pl;
	struct ctl_stats *st = &ctl_stats[wa->idx];
	void *jp;

	while (!atomic_load(&pl->stop)) {
		struct job j;

		if (rte_ring_dequeue(pl->jobs, &jp) != 0) {
			work_idle(pl, st);
			continue;
		}
		j = *(struct job *)jp;
		free(jp);
		deliver_job(pl, &j, st);
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
	struct dnsq_params qp = { 0 };
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
	pl->auth = auth_create(pl->ub, c->hostname, c->dns_timeout_ms, err, errlen);
	if (!pl->auth)
		goto fail;
	pl->max_spf = c->max_spf_checks;
	qp.ub = pl->ub;
	qp.max_inflight = c->max_spf_checks < SPF_QUERIES_MIN / SPF_QUERIES_EACH ?
				  SPF_QUERIES_MIN :
				  c->max_spf_checks * SPF_QUERIES_EACH;
	qp.max_inflight += KEY_QUERIES;
	qp.lane_max[RDNS_LANE - 1] = RDNS_INFLIGHT * RDNS_MAX_NAMES;
	pl->dnsq = dnsq_create(&qp);
	if (!pl->dnsq) {
		snprintf(err, errlen, "DNS queries: %s", strerror(errno));
		goto fail;
	}
	dp.dnsq = pl->dnsq;
	dp.lane = RDNS_LANE;
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
			.pool_size = c->relay_connections,
			.connections = c->relay_connections,
			.counters = ctl_stats[CTLPLANE_RELAY_BLOCK].c + CTL_RELAY_CONN_OPENED,
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

const volatile uint8_t *
ctlplane_spf_full(const struct ctlplane *pl)
{
	return &pl->spf_full;
}

void
ctlplane_destroy(struct ctlplane *pl)
{
	unsigned i;
	void *jp;

	if (!pl)
		return;
	atomic_store(&pl->stop, true);
	work_wake(pl, INT_MAX);
	for (i = 0; i < pl->n_threads; i++)
		pthread_join(pl->threads[i], NULL);
	/* No more submissions: what the spool holds is committed and answered,
	 * what the relay holds answered. */
	spool_close(pl->spool);
	relay_destroy(pl->relay);
	pl->relay = NULL;
	if (pl->jobs) {
		while (rte_ring_dequeue(pl->jobs, &jp) == 0) {
			job_discard(jp);
			free(jp);
		}
		rte_ring_free(pl->jobs);
	}
	if (pl->sess)
		for (i = 0; i < pl->n_workers * pl->max_flows; i++) {
			pl->sess[i].spf = spf_chk_drop(pl, pl->sess[i].spf);
			key_early_drop(pl, &pl->sess[i]);
		}
	spf_parked_free(pl);
	key_parked_free(pl);
	/* rdns withdraws its queries from dnsq: it goes first */
	pl->rdns = rdns_destroy(pl->rdns);
	pl->dnsq = dnsq_destroy(pl->dnsq);
	auth_destroy(pl->auth);
	if (pl->ub)
		dns_resolver_destroy(pl->ub);
	if (pl->log_owned)
		fclose(pl->log);
	free(pl->sess);
	free(pl->req_free);
	free(pl->reqs);
	free(pl);
}
