/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dkim/prefetch.c — see prefetch.h. The loop is the dispatcher's in
 * miniature: issue every query, poll dnsq's fd up to the next deadline,
 * deliver, until nothing is out.
 */
#include <poll.h>
#include <stdlib.h>
#include <time.h>

#include <unbound.h>

#include "auth/dkim.h"
#include "dns/dnsq.h"

#include "tests/dkim/prefetch.h"

struct prefetch_ref {
	struct dkim_keys *k;
	unsigned i;
};

static uint64_t
prefetch_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
prefetch_done(void *arg, int err, struct ub_result *res)
{
	struct prefetch_ref *ref = arg;

	if (err == DNSQ_TIMEOUT)
		dkim_keys_timeout(ref->k, ref->i);
	else
		dkim_keys_answer(ref->k, ref->i, err, res);
}

struct dkim_keys *
dkim_prefetch(struct ub_ctx *ub, struct dkim_verifier *v, const uint8_t *m, size_t len,
	      size_t chunk, uint32_t timeout_ms)
{
	struct dkim_keys *k = dkim_keys_create(v);
	struct dnsq_params qp = { .ub = ub, .max_inflight = 64 };
	struct prefetch_ref *refs;
	struct dnsq *q;
	size_t off = 0;
	unsigned i, n;

	if (k == NULL)
		return NULL;
	if (chunk == 0)
		chunk = len ? len : 1;
	while (off < len) {
		size_t step = len - off < chunk ? len - off : chunk;

		if (dkim_keys_feed(k, m + off, step))
			break;
		off += step;
	}
	dkim_keys_scan_end(k);
	n = dkim_keys_count(k);
	if (ub == NULL || n == 0)
		return k;
	refs = calloc(n, sizeof(*refs));
	q = refs != NULL ? dnsq_create(&qp) : NULL;
	if (q == NULL) {
		free(refs);
		return dkim_keys_free(k);
	}
	for (i = 0; i < n; i++) {
		refs[i] = (struct prefetch_ref){ .k = k, .i = i };
		if (dnsq_issue(q, dkim_keys_name(k, i), 16 /* TXT */, timeout_ms, prefetch_done,
			       &refs[i], prefetch_now_us()) == 0)
			dkim_keys_answer(k, i, UB_NOMEM, NULL);
	}
	while (dnsq_inflight(q) > 0) {
		struct pollfd pfd = { .fd = dnsq_fd(q), .events = POLLIN };

		(void)poll(&pfd, 1, dnsq_timeout_ms(q, prefetch_now_us()));
		dnsq_process(q, prefetch_now_us());
	}
	dnsq_destroy(q);
	free(refs);
	return k;
}
