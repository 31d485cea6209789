/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/tcp.h — the interface of smtpedge's server-side TCP engine.
 *
 * The engine is pure C: a segment and the current time go in, segments to
 * send (through ops->output) and events for the layer above (ops->open,
 * recv, ...) come out. No DPDK, no system calls, no malloc after create, so
 * the worker, the unit tests and the fuzzer all drive the same code. See the
 * header comment of dataplane/tcp.c for the design choices.
 */
#ifndef SMTPEDGE_DATAPLANE_TCP_H
#define SMTPEDGE_DATAPLANE_TCP_H

#include <stdbool.h>
#include <stdint.h>

struct tcp_engine; /* one per worker lcore */
struct tcp_conn;   /* opaque TCB */

struct tcp_params {
	uint32_t max_flows;    /* TCBs and flow-table size */
	const uint16_t *ports; /* listening ports (host order), copied */
	uint32_t n_ports;
	uint16_t mss4, mss6;        /* our MSS; mss6 never below 1220, both at most 2048 */
	uint32_t sndbuf_bytes;      /* per-connection send buffer bound */
	uint32_t sndbuf_pool_bytes; /* send-buffer memory of the engine (2 KiB chunks) */
	uint32_t ooo_max_bytes;     /* per-connection bound on out-of-order memory */
	uint32_t ooo_pool_bytes;    /* out-of-order memory of the engine (2 KiB chunks) */
	uint32_t handshake_timeout_ms, idle_timeout_ms, lifetime_ms;
	uint32_t rto_min_ms, rto_max_ms, max_retries;
	uint32_t halfopen_max;   /* half-open TCBs; beyond it SYN cookies */
	uint32_t rst_rate_per_s; /* RSTs / stray ACKs to segments with no TCB */
	uint64_t secret_seed;    /* seeds the SYN-cookie and flow-hash keys */
	uint32_t fin_wait2_ms;   /* bound on FIN_WAIT_2 (0: 10 s) */
	uint32_t synack_window;  /* window of the SYN-ACK, before the app exists: at
					most what recv() takes at once (0: 14,600) */
};

struct tcp_pkt {                      /* one received, validated segment */
	uint8_t family;               /* 4 or 6 */
	uint8_t saddr[16], daddr[16]; /* peer, us; IPv4 in the first 4 bytes */
	const uint8_t *tcp;           /* TCP header + payload */
	uint32_t len;
	uint64_t link; /* opaque to the engine: where the segment came
					from (the worker puts the source MAC here) */
};

struct tcp_out { /* one segment to send; checksum field left 0 */
	uint8_t family;
	uint8_t saddr[16], daddr[16]; /* us, peer */
	const uint8_t *hdr;           /* TCP header with options */
	uint32_t hdr_len;
	const uint8_t *data[2]; /* payload, up to two pieces; valid during the call */
	uint32_t data_len[2];
	uint64_t link; /* the link of the input being answered, or the
					last one accepted on the connection */
};

struct tcp_conn_info {
	uint8_t family;
	uint8_t peer[16], local[16];
	uint16_t peer_port, local_port;
	bool from_cookie; /* established by a SYN cookie */
	uint32_t irs;     /* peer's initial sequence number (logs, tests) */
};

enum tcp_close_reason {
	TCP_CLOSE_NORMAL,            /* both FINs exchanged */
	TCP_CLOSE_RESET,             /* peer sent RST */
	TCP_CLOSE_ABORT,             /* tcp_abort() */
	TCP_CLOSE_TIMEOUT_RTO,       /* retransmission retry cap */
	TCP_CLOSE_TIMEOUT_IDLE,      /* idle timer and the app did not close */
	TCP_CLOSE_TIMEOUT_LIFETIME,  /* total lifetime */
	TCP_CLOSE_TIMEOUT_FIN_WAIT2, /* peer never closed its side */
	TCP_CLOSE_REASON_COUNT
};

struct tcp_ops {                                            /* ctx is the worker's */
	bool (*output)(void *ctx, const struct tcp_out *o); /* false: not sent */
	void *(*open)(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *info);
	/* Returns how many of the n bytes the app took (a prefix). Only those
	 * are acknowledged; the rest is left for the peer to send again. */
	uint32_t (*recv)(void *app, const uint8_t *p, uint32_t n);
	uint32_t (*rcv_space)(void *app);      /* bytes recv() surely takes; NULL: 64 KiB */
	void (*sent)(void *app);               /* may be NULL */
	void (*peer_fin)(void *app);           /* may be NULL */
	void (*idle)(void *app);               /* may be NULL: the engine aborts */
	void (*closed)(void *app, int reason); /* enum tcp_close_reason */
};

/* Dispositions returned by tcp_input, for counting by the caller. */
#define TCP_DISPOSITIONS(X)                                                \
	X(CONN)          /* handled by an existing connection */           \
	X(SYN_HALFOPEN)  /* SYN answered from the half-open table */       \
	X(SYN_COOKIE)    /* SYN answered with a cookie */                  \
	X(COOKIE_OK)     /* connection established from a cookie */        \
	X(COOKIE_NO_TCB) /* valid cookie but no TCB free: RST */           \
	X(CLOSED_PORT)   /* not a listening port */                        \
	X(STRAY)         /* listening port, no connection, not a cookie */ \
	X(MALFORMED)     /* header unusable */

enum tcp_disposition {
#define TCP_X_ENUM(n) TCP_IN_##n,
	TCP_DISPOSITIONS(TCP_X_ENUM)
#undef TCP_X_ENUM
		TCP_IN_COUNT
};

/* Counters: plain uint64_t, one engine per lcore, read by telemetry through
 * tcp_counter_names[] without knowing each field. */
#define TCP_COUNTERS(X)           \
	X(opened)                 \
	X(closed)                 \
	X(aborted)                \
	X(reset_by_peer)          \
	X(refused)                \
	X(retransmits)            \
	X(fast_retransmits)       \
	X(synack_retransmits)     \
	X(halfopen_created)       \
	X(halfopen_full)          \
	X(tcb_exhausted)          \
	X(cookies_sent)           \
	X(cookies_validated)      \
	X(cookies_rejected)       \
	X(cookie_no_tcb)          \
	X(cookies_inactive)       \
	X(cookie_data_dropped)    \
	X(drop_app_full)          \
	X(challenge_acks)         \
	X(challenge_acks_limited) \
	X(rst_sent)               \
	X(rst_rate_limited)       \
	X(stray_fin_acked)        \
	X(drop_malformed)         \
	X(drop_bad_flags)         \
	X(drop_bad_ack)           \
	X(drop_old_ack)           \
	X(drop_paws)              \
	X(drop_out_of_window)     \
	X(drop_stray_rst)         \
	X(drop_ooo_limit)         \
	X(drop_ooo_pool)          \
	X(dup_segments)           \
	X(ooo_segments)           \
	X(sndbuf_pool_empty)      \
	X(output_failed)          \
	X(window_updates)         \
	X(persist_probes)         \
	X(timeout_rto)            \
	X(timeout_handshake)      \
	X(timeout_idle)           \
	X(timeout_lifetime)       \
	X(timeout_fin_wait2)

struct tcp_counters {
#define TCP_X_FIELD(n) uint64_t n;
	TCP_COUNTERS(TCP_X_FIELD)
#undef TCP_X_FIELD
};
extern const char *const tcp_counter_names[]; /* same order as the fields */
extern const uint32_t tcp_counter_count;
extern const char *const tcp_disposition_names[];

struct tcp_engine *tcp_engine_create(const struct tcp_params *p, const struct tcp_ops *ops,
				     void *ctx, uint64_t now_us); /* NULL + errno */
void tcp_engine_destroy(struct tcp_engine *e);                    /* tolerates NULL; no callbacks */
int tcp_input(struct tcp_engine *e, const struct tcp_pkt *pkt, uint64_t now_us);
void tcp_engine_tick(struct tcp_engine *e, uint64_t now_us);
uint32_t tcp_engine_active(const struct tcp_engine *e);
const struct tcp_counters *tcp_engine_counters(const struct tcp_engine *e);

/* The app may call these from inside any callback. tcp_abort calls closed()
 * before it returns. */
uint32_t tcp_send(struct tcp_conn *c, const void *p, uint32_t n);
uint32_t tcp_send_space(const struct tcp_conn *c);
void tcp_close(struct tcp_conn *c);
void tcp_abort(struct tcp_conn *c);
void tcp_rcv_window_update(struct tcp_conn *c);
const char *tcp_conn_state_name(const struct tcp_conn *c); /* for logs */
uint32_t tcp_conn_size(void);                              /* sizeof the TCB, for reports */

#endif
