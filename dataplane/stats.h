/*
 * stats.h - the dataplane's counters: one block per lcore, written only by
 * that lcore, summed by whoever reads (the telemetry thread). No atomics and
 * no shared cache lines on the fast path; a reader may see a counter a few
 * packets old, never a torn one (aligned 64-bit stores on the CPUs DPDK
 * supports).
 */
#ifndef SMTPEDGE_STATS_H
#define SMTPEDGE_STATS_H

#include <stdint.h>

#include <rte_common.h>
#include <rte_lcore.h>

#include "dataplane/pkt.h"

#define DP_COUNTERS(X)                                                        \
	X(RX_PACKETS, "rx_packets")                                           \
	X(RX_BYTES, "rx_bytes")                                               \
	X(TX_PACKETS, "tx_packets")                                           \
	X(TX_BYTES, "tx_bytes")                                               \
	X(TX_DROPPED, "tx_dropped")         /* TX queue full: freed */        \
	X(TX_NOMBUF, "tx_nombuf")           /* no mbuf for an output segment */ \
	X(RX_DROPPED, "rx_dropped")         /* all drops, by reason below */  \
	X(ARP_REPLIES, "arp_replies")                                         \
	X(ND_ADVERTS, "nd_adverts")                                           \
	X(ECHO4_REPLIES, "echo4_replies")                                     \
	X(ECHO6_REPLIES, "echo6_replies")                                     \
	X(TCP_SEGMENTS, "tcp_segments")     /* handed to the TCP engine */    \
	X(POLLS, "polls")                                                     \
	X(BUSY_POLLS, "busy_polls")         /* polls that found work */       \
	X(BUSY_CYCLES, "busy_cycles")       /* TSC cycles spent on that work */ \
	X(FAULT_DROPPED, "fault_dropped")   /* test fault shim only */        \
	X(FAULT_DUPLICATED, "fault_duplicated")                               \
	X(FAULT_REORDERED, "fault_reordered")

enum dp_counter {
#define DP_COUNTER_ENUM(id, name) DP_##id,
	DP_COUNTERS(DP_COUNTER_ENUM)
#undef DP_COUNTER_ENUM
	DP__COUNT
};

struct dp_stats {
	uint64_t c[DP__COUNT];
	uint64_t drop[PKT_DROP__COUNT];
} __rte_cache_aligned;

extern struct dp_stats dp_stats[RTE_MAX_LCORE];

const char *dp_counter_name(enum dp_counter c);
/* Sum of every lcore's block. */
void dp_stats_total(struct dp_stats *out);

#endif
