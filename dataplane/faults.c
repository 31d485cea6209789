/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/faults.c — the test fault shim (see faults.h). Deterministic for
 * a seed: a failing run can be replayed. Every frame it loses, on purpose or
 * for want of room in the burst, is counted in fault_dropped, so a test can
 * tell the shim's losses from the engine's.
 */
#include <rte_mbuf.h>

#include "dataplane/faults.h"
#include "dataplane/stats.h"

void
faults_init(struct faults *f, uint32_t drop, uint32_t dup, uint32_t reorder, uint64_t seed,
	    struct rte_mempool *pool)
{
	f->drop_pct = drop;
	f->dup_pct = dup;
	f->reorder_pct = reorder;
	f->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	f->pool = pool;
	f->n_held = 0;
}

bool
faults_enabled(const struct faults *f)
{
	return f->drop_pct || f->dup_pct || f->reorder_pct;
}

static uint32_t
roll(struct faults *f) /* xorshift64*: 0..99 */
{
	f->rng ^= f->rng >> 12;
	f->rng ^= f->rng << 25;
	f->rng ^= f->rng >> 27;
	return (uint32_t)((f->rng * 0x2545f4914f6cdd1dull) >> 32) % 100;
}

uint16_t
faults_apply(struct faults *f, struct rte_mbuf **pkts, uint16_t n, uint16_t cap,
	     struct dp_stats *st)
{
	struct rte_mbuf *out[cap];
	struct rte_mbuf *keep[FAULTS_HOLD];
	uint16_t n_out = 0, n_keep = 0, i;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i], *c;

		if (roll(f) < f->drop_pct) {
			rte_pktmbuf_free(m);
			st->c[DP_FAULT_DROPPED]++;
			continue;
		}
		if (roll(f) < f->reorder_pct && n_keep < FAULTS_HOLD) {
			keep[n_keep++] = m;
			st->c[DP_FAULT_REORDERED]++;
			continue;
		}
		if (n_out == cap) { /* no room: a loss, and counted as one */
			rte_pktmbuf_free(m);
			st->c[DP_FAULT_DROPPED]++;
			continue;
		}
		out[n_out++] = m;
		if (roll(f) < f->dup_pct && n_out < cap &&
		    (c = rte_pktmbuf_copy(m, f->pool, 0, UINT32_MAX)) != NULL) {
			out[n_out++] = c;
			st->c[DP_FAULT_DUPLICATED]++;
		}
	}
	/* What was held last time goes out after this burst's packets. */
	for (i = 0; i < f->n_held; i++) {
		if (n_out < cap) {
			out[n_out++] = f->held[i];
		} else {
			rte_pktmbuf_free(f->held[i]);
			st->c[DP_FAULT_DROPPED]++;
		}
	}
	for (i = 0; i < n_keep; i++)
		f->held[i] = keep[i];
	f->n_held = n_keep;
	for (i = 0; i < n_out; i++)
		pkts[i] = out[i];
	return n_out;
}

bool
faults_holding(const struct faults *f)
{
	return f->n_held != 0;
}

void
faults_flush(struct faults *f)
{
	while (f->n_held)
		rte_pktmbuf_free(f->held[--f->n_held]);
}
