/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/stats.h — the dataplane's counters: one block per lcore, written
 * only by that lcore, summed by whoever reads (the telemetry thread). No
 * atomics and no shared cache lines on the fast path; a reader may see a
 * counter a few packets old, never a torn one (aligned 64-bit stores on the
 * CPUs DPDK supports).
 */
#ifndef SMTPEDGE_DATAPLANE_STATS_H
#define SMTPEDGE_DATAPLANE_STATS_H

#include <stdint.h>

#include <rte_common.h>
#include <rte_lcore.h>

#include "dataplane/pkt.h"

#define DP_COUNTERS(X)                                                            \
	X(RX_PACKETS, "rx_packets")                                               \
	X(RX_BYTES, "rx_bytes")                                                   \
	X(TX_PACKETS, "tx_packets")                                               \
	X(TX_BYTES, "tx_bytes")                                                   \
	X(TX_DROPPED, "tx_dropped") /* TX queue full: freed */                    \
	X(TX_NOMBUF, "tx_nombuf")   /* no mbuf for an output segment */           \
	X(RX_DROPPED, "rx_dropped") /* all drops, by reason below */              \
	X(ARP_REPLIES, "arp_replies")                                             \
	X(ND_ADVERTS, "nd_adverts")                                               \
	X(ECHO4_REPLIES, "echo4_replies")                                         \
	X(ECHO6_REPLIES, "echo6_replies")                                         \
	X(TCP_SEGMENTS, "tcp_segments") /* handed to the TCP engine */            \
	X(POLLS, "polls")                                                         \
	X(BUSY_POLLS, "busy_polls")   /* polls that found work */                 \
	X(BUSY_CYCLES, "busy_cycles") /* TSC cycles spent on that work */         \
	X(SESSIONS_OPENED, "sessions_opened")                                     \
	X(SESSIONS_CLOSED, "sessions_closed")                                     \
	X(SESS_IDLE_EVICTED, "sess_idle_evicted")                                 \
	X(SESS_IDLE_SHORTENED, "sess_idle_shortened")                             \
	X(SESS_BUFFER_EVICTED, "sess_buffer_evicted")                             \
	X(SESSIONS_REFUSED, "sessions_refused") /* no session slot: RST */        \
	X(SPOOL_ZOMBIES, "spool_zombies")       /* TCP gone while spooling */     \
	X(SPOOL_TIMEOUTS, "spool_timeouts")     /* no answer in time: 451 */      \
	X(REQ_RING_FULL, "req_ring_full")       /* control plane behind: 4xx */   \
	X(TXREC_EXHAUSTED, "txrec_exhausted")                                     \
	X(BODY_BUDGET_EXHAUSTED, "body_budget_exhausted") /* 452 4.3.1 */         \
	X(SESSION_BUFFERS_HELD, "session_buffers_held")   /* gauge: lent now */   \
	X(SESSION_BUFFERS_EMPTY, "session_buffers_empty") /* a session waited */  \
	X(LOG_DROPPED, "log_dropped")                                             \
	X(VERDICTS_STALE, "verdicts_stale") /* for a session that has gone */     \
	X(MAIL_SPF_BUSY, "mail_spf_busy")   /* 451 4.7.26: SPF checks at bound */ \
	X(IPV6_PTR_PASS, "ipv6_ptr_pass")   /* the rules' outcomes */             \
	X(IPV6_PTR_REJECT, "ipv6_ptr_reject")                                     \
	X(IPV6_PTR_DEFER, "ipv6_ptr_defer")                                       \
	X(IPV6_PTR_LOGGED, "ipv6_ptr_logged")                                     \
	X(IPV4_PTR_PASS, "ipv4_ptr_pass")                                         \
	X(IPV4_PTR_REJECT, "ipv4_ptr_reject")                                     \
	X(IPV4_PTR_DEFER, "ipv4_ptr_defer")                                       \
	X(IPV4_PTR_LOGGED, "ipv4_ptr_logged")                                     \
	X(TLS_STARTTLS, "tls_starttls") /* 220 to STARTTLS */                     \
	X(TLS_HANDSHAKES_FULL, "tls_handshakes_full")                             \
	X(TLS_HANDSHAKES_RESUMED, "tls_handshakes_resumed")                       \
	X(TLS_FAIL_PROTOCOL, "tls_failed_protocol") /* by enum tls_fail */        \
	X(TLS_FAIL_VERSION, "tls_failed_version")                                 \
	X(TLS_FAIL_CIPHER, "tls_failed_no_shared_cipher")                         \
	X(TLS_FAIL_ALERT, "tls_failed_peer_alert")                                \
	X(TLS_FAIL_OTHER, "tls_failed_other")                                     \
	X(TLS_FAIL_TIMEOUT, "tls_failed_timeout") /* idle mid-handshake */        \
	X(TLS_ALERTS_SENT, "tls_alerts_sent")                                     \
	X(TLS_ALERTS_RECEIVED, "tls_alerts_received")                             \
	X(TLS_DISCARDED_BYTES, "tls_discarded_bytes") /* after STARTTLS */        \
	X(TLS_REFUSED_FULL, "tls_refused_full")       /* 454: max_sessions */     \
	X(TLS_REFUSED_NOMEM, "tls_refused_nomem")                                 \
	X(TLS_REFUSED_RULE, "tls_refused_rule")  /* the PTR rule's refusal */     \
	X(TLS_SESSIONS, "tls_sessions")          /* gauge: sessions in TLS now */ \
	X(TLS_HS_CPU_US, "tls_handshake_cpu_us") /* worker CPU, summed */         \
	X(TLS_HS_LE_1MS, "tls_handshake_le_1ms") /* STARTTLS to finished */       \
	X(TLS_HS_LE_5MS, "tls_handshake_le_5ms")                                  \
	X(TLS_HS_LE_20MS, "tls_handshake_le_20ms")                                \
	X(TLS_HS_LE_100MS, "tls_handshake_le_100ms")                              \
	X(TLS_HS_LE_500MS, "tls_handshake_le_500ms")                              \
	X(TLS_HS_GT_500MS, "tls_handshake_gt_500ms")                              \
	X(FAULT_DROPPED, "fault_dropped") /* test fault shim only */              \
	X(FAULT_DUPLICATED, "fault_duplicated")                                   \
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
