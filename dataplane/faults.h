/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/faults.h — a seeded fault shim around a worker's RX and TX
 * bursts, for tests only: this kernel has no netem, so loss, duplication and
 * reordering come from here. Off unless the config's [faults] section asks
 * for it; with it off, the worker never calls in.
 */
#ifndef SMTPEDGE_DATAPLANE_FAULTS_H
#define SMTPEDGE_DATAPLANE_FAULTS_H

#include <stdbool.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct dp_stats;

#define FAULTS_HOLD 32

struct faults {
	uint32_t drop_pct, dup_pct, reorder_pct;
	uint64_t rng;
	struct rte_mempool *pool; /* for duplicates */
	uint16_t n_held;
	struct rte_mbuf *held[FAULTS_HOLD];
};

void faults_init(struct faults *f, uint32_t drop, uint32_t dup, uint32_t reorder, uint64_t seed,
		 struct rte_mempool *pool);
bool faults_enabled(const struct faults *f);
/* Rewrites pkts[0..n) in place (cap slots): drops, duplicates, and holds
 * some back to release after the next call's packets. Returns the new
 * count. Releases what it held even when n is 0. */
uint16_t faults_apply(struct faults *f, struct rte_mbuf **pkts, uint16_t n, uint16_t cap,
		      struct dp_stats *st);
/* True while frames are held back: the caller must go on calling
 * faults_apply (with n = 0 if it has nothing new), else a held frame waits
 * for unrelated traffic, which in a quiet SMTP dialogue is the peer's or
 * our retransmission timeout, and a "reordered" frame becomes a lost one. */
bool faults_holding(const struct faults *f);
void faults_flush(struct faults *f);

#endif
