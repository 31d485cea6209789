/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim_ub.c — libopendkim's DNS hooks answered by libunbound.
 *
 * Why: smtpedge resolves everything through ONE libunbound context created by
 * the control plane (one resolver, one cache, the configured forwarder).
 * libopendkim would otherwise call res_query() on /etc/resolv.conf. Its DNS
 * layer is pluggable: it starts a query, waits for it with a timeout, then
 * cancels it (always, answered or not) and parses the raw DNS reply itself.
 *
 * How: a query is an ub_resolve_async() whose callback copies the wire-format
 * answer into the buffer libopendkim lent us. Callbacks only run inside
 * ub_process(), so the waiting threads take turns at polling ub_fd(): one
 * pool thread at a time polls and processes (it delivers the answers of every
 * thread), the others sleep on a condition variable that each delivered
 * answer broadcasts. Whoever else calls ub_process() on the same context
 * (the dns/ module's loop, say) delivers our answers just as well; the poller
 * wakes every DKIM_UB_SLICE_MS to notice that.
 *
 * What the library makes of the answer: NXDOMAIN or an empty answer is "no
 * key" (permerror); a failed wait or error is "key query failed"
 * (temperror). So SERVFAIL, REFUSED, a DNSSEC-bogus answer and our timeout
 * must all surface as DKIM_DNS_ERROR / DKIM_DNS_EXPIRED, never as a reply.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <unbound.h>

#include "auth/dkim_ub.h"

/* How long the polling thread sleeps before looking again at answers that
 * another thread's ub_process() may have delivered for it. */
#define DKIM_UB_SLICE_MS 50

struct dkim_ub {
	struct ub_ctx *ub;
	uint32_t timeout_ms;
	pthread_mutex_t lock;
	pthread_cond_t answered; /* an answer came, or the poller left */
	bool polling;            /* a thread is in poll(ub_fd) */
	bool lock_made;
	bool cond_made;
};

/* One key lookup: lives from the library's start hook to its cancel hook. */
struct dkim_ubq {
	struct dkim_ub *dns;
	int async_id;
	bool done;          /* under dns->lock */
	int status;         /* DKIM_DNS_SUCCESS or _ERROR */
	unsigned char *buf; /* the library's answer buffer */
	size_t buflen;
	size_t anslen;
	uint64_t deadline_ms; /* CLOCK_MONOTONIC */
};

static uint64_t
dkim_ub_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timespec
dkim_ub_abstime(uint64_t ms)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ms / 1000u),
		.tv_nsec = (long)(ms % 1000u) * 1000000L,
	};

	return ts;
}

struct dkim_ub *
dkim_ub_create(struct ub_ctx *ub, uint32_t timeout_ms)
{
	struct dkim_ub *dns;
	pthread_condattr_t attr;
	int rc;

	if (ub == NULL || timeout_ms == 0) {
		errno = EINVAL;
		return NULL;
	}
	dns = calloc(1, sizeof(*dns));
	if (dns == NULL)
		return NULL;
	dns->ub = ub;
	dns->timeout_ms = timeout_ms;

	rc = pthread_mutex_init(&dns->lock, NULL);
	if (rc != 0)
		goto fail;
	dns->lock_made = true;

	/* Deadlines are monotonic: a wall-clock step must not stretch or cut
	 * a DNS wait. */
	rc = pthread_condattr_init(&attr);
	if (rc != 0)
		goto fail;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(&dns->answered, &attr);
	pthread_condattr_destroy(&attr);
	if (rc != 0)
		goto fail;
	dns->cond_made = true;
	return dns;
fail:
	dkim_ub_destroy(dns);
	errno = rc;
	return NULL;
}

struct dkim_ub *
dkim_ub_destroy(struct dkim_ub *dns)
{
	if (dns == NULL)
		return NULL;
	if (dns->cond_made)
		pthread_cond_destroy(&dns->answered);
	if (dns->lock_made)
		pthread_mutex_destroy(&dns->lock);
	free(dns);
	return NULL;
}

/* Which answers libopendkim may parse. Everything else is a failure to get
 * an answer, which the library turns into "key query failed" (temperror). */
static bool
dkim_ub_answer_usable(const struct ub_result *res)
{
	if (res->bogus)
		return false;
	return res->rcode == ns_r_noerror || res->rcode == ns_r_nxdomain;
}

/* libunbound callback: runs in whichever thread called ub_process(). */
static void
dkim_ub_answer(void *arg, int err, struct ub_result *res)
{
	struct dkim_ubq *q = arg;
	struct dkim_ub *dns = q->dns;
	int status = DKIM_DNS_ERROR;
	size_t len = 0;

	if (err == 0 && res != NULL && dkim_ub_answer_usable(res) && res->answer_packet != NULL &&
	    res->answer_len > 0 && (size_t)res->answer_len <= q->buflen) {
		len = (size_t)res->answer_len;
		memcpy(q->buf, res->answer_packet, len);
		status = DKIM_DNS_SUCCESS;
	}
	ub_resolve_free(res);

	pthread_mutex_lock(&dns->lock);
	q->status = status;
	q->anslen = len;
	q->done = true;
	pthread_cond_broadcast(&dns->answered);
	pthread_mutex_unlock(&dns->lock);
}

static int
dkim_ub_start(void *srv, int type, unsigned char *name, unsigned char *buf, size_t buflen,
	      void **qh)
{
	struct dkim_ub *dns = srv;
	struct dkim_ubq *q;
	int rc;

	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return DKIM_DNS_ERROR;
	q->dns = dns;
	q->buf = buf;
	q->buflen = buflen;
	q->deadline_ms = dkim_ub_now_ms() + dns->timeout_ms;

	rc = ub_resolve_async(dns->ub, (const char *)name, type, ns_c_in, q, dkim_ub_answer,
			      &q->async_id);
	if (rc != 0) {
		free(q);
		return DKIM_DNS_ERROR;
	}
	*qh = q;
	return DKIM_DNS_SUCCESS;
}

/* Take one turn at delivering answers: called and returns with dns->lock
 * held, drops it while blocked in poll(). */
static void
dkim_ub_poll_turn(struct dkim_ub *dns, uint64_t wait_ms)
{
	struct pollfd pfd = { .fd = ub_fd(dns->ub), .events = POLLIN };

	dns->polling = true;
	pthread_mutex_unlock(&dns->lock);
	if (pfd.fd >= 0) {
		(void)poll(&pfd, 1, (int)wait_ms);
	} else {
		struct timespec pause = dkim_ub_abstime(wait_ms);

		(void)nanosleep(&pause, NULL);
	}
	/* Non-blocking: delivers whatever is queued, ours or not. */
	(void)ub_process(dns->ub);
	pthread_mutex_lock(&dns->lock);
	dns->polling = false;
	pthread_cond_broadcast(&dns->answered);
}

static int
dkim_ub_wait(void *srv, void *qh, struct timeval *timeout, size_t *bytes, int *error, int *dnssec)
{
	struct dkim_ub *dns = srv;
	struct dkim_ubq *q = qh;
	uint64_t deadline = q->deadline_ms;
	uint64_t now = dkim_ub_now_ms();
	bool done;
	int status;

	if (timeout != NULL) {
		uint64_t lib_ms = (uint64_t)timeout->tv_sec * 1000u +
				  (uint64_t)timeout->tv_usec / 1000u;

		if (now + lib_ms < deadline)
			deadline = now + lib_ms;
	}

	pthread_mutex_lock(&dns->lock);
	while (!q->done && (now = dkim_ub_now_ms()) < deadline) {
		uint64_t wait_ms = deadline - now;

		if (wait_ms > DKIM_UB_SLICE_MS)
			wait_ms = DKIM_UB_SLICE_MS;
		if (!dns->polling) {
			dkim_ub_poll_turn(dns, wait_ms);
		} else {
			struct timespec until = dkim_ub_abstime(now + wait_ms);

			(void)pthread_cond_timedwait(&dns->answered, &dns->lock, &until);
		}
	}
	done = q->done;
	status = q->status;
	pthread_mutex_unlock(&dns->lock);

	if (!done)
		return DKIM_DNS_EXPIRED;
	if (bytes != NULL)
		*bytes = q->anslen;
	if (error != NULL)
		*error = 0;
	if (dnssec != NULL)
		*dnssec = DKIM_DNSSEC_UNKNOWN;
	return status;
}

/* Called once per query, answered or not. After ub_cancel() succeeds the
 * callback will never run. UB_NOID means the answer has already been taken
 * off libunbound's list and its callback is running or about to, so q must
 * outlive it. (Any other error comes from a forked-mode context after it
 * dropped the query: no callback will come.) */
static int
dkim_ub_cancel(void *srv, void *qh)
{
	struct dkim_ub *dns = srv;
	struct dkim_ubq *q = qh;
	bool done;

	pthread_mutex_lock(&dns->lock);
	done = q->done;
	pthread_mutex_unlock(&dns->lock);

	if (!done && ub_cancel(dns->ub, q->async_id) == UB_NOID) {
		pthread_mutex_lock(&dns->lock);
		while (!q->done)
			pthread_cond_wait(&dns->answered, &dns->lock);
		pthread_mutex_unlock(&dns->lock);
	}
	free(q);
	return DKIM_DNS_SUCCESS;
}

void
dkim_ub_attach(DKIM_LIB *lib, struct dkim_ub *dns)
{
	(void)dkim_dns_set_query_service(lib, dns);
	dkim_dns_set_query_start(lib, dkim_ub_start);
	dkim_dns_set_query_waitreply(lib, dkim_ub_wait);
	dkim_dns_set_query_cancel(lib, dkim_ub_cancel);
	/* The defaults would res_ninit()/res_nclose() our service pointer. */
	dkim_dns_set_init(lib, NULL);
	dkim_dns_set_close(lib, NULL);
	dkim_dns_set_nslist(lib, NULL);
	dkim_dns_set_config(lib, NULL);
	dkim_dns_set_trustanchor(lib, NULL);
}
