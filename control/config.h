/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/config.h — smtpedge's configuration: an INI file read with rte_cfgfile.
 *
 * Every key is declared once, in the table in config.c, with its type, its
 * bounds and its default. A missing file, a section or key the table does
 * not know, a key given twice, or a value that does not parse stops the
 * start with one line naming the file, the section, the key and the fault.
 */
#ifndef SMTPEDGE_CONTROL_CONFIG_H
#define SMTPEDGE_CONTROL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "control/policy.h"

#define CONFIG_MAX_PORTS   8
#define CONFIG_MAX_DOMAINS 256
#define CONFIG_MAX_DNS     4
#define CONFIG_NAME_LEN    256
#define CONFIG_PATH_LEN    512

enum relay_protocol { RELAY_SMTP, RELAY_LMTP };

struct edge_config {
	char path[CONFIG_PATH_LEN];

	/* [edge] */
	char hostname[CONFIG_NAME_LEN];
	char authserv_id[CONFIG_NAME_LEN];
	bool has_addr6, has_addr4;
	uint8_t addr6[16];
	uint8_t addr4[4];
	uint16_t smtp_ports[CONFIG_MAX_PORTS];
	uint32_t n_smtp_ports;

	/* [dns] */
	char dns_servers[CONFIG_MAX_DNS][64]; /* "addr@port" for libunbound */
	uint32_t n_dns_servers;               /* 0: full recursion */
	uint32_t dns_timeout_ms;
	char dns_trust_anchor[CONFIG_PATH_LEN];

	/* [domains] */
	char domains[CONFIG_MAX_DOMAINS][CONFIG_NAME_LEN];
	uint32_t n_domains;

	/* [relay] */
	char relay_target[CONFIG_NAME_LEN]; /* "[host]:port" or "" */
	char spool_dir[CONFIG_PATH_LEN];
	enum relay_protocol relay_protocol;
	uint32_t relay_connections; /* to the downstream, open at most */

	/* [dataplane] */
	uint32_t mbufs; /* per port, shared by its queues */
	uint32_t rx_desc, tx_desc;
	uint32_t mtu;
	uint32_t flows;           /* per worker; by default what memory_mb holds */
	uint32_t session_buffers; /* per worker; by default from flows */
	uint32_t memory_mb;       /* per worker, for sessions (common/sizing.h) */

	/* [smtp] */
	uint32_t max_cmd_line, max_text_line, max_rcpts, max_errors;
	uint64_t max_message_size;
	bool pregreet_reject;
	uint32_t idle_timeout_s, lifetime_s;
	uint32_t idle_pressure_pct;  /* flows in use, percent, where the idle
					timeout starts to fall (100: never) */
	uint32_t idle_timeout_min_s; /* the idle timeout with every flow in use */

	/* [control] */
	uint32_t control_threads;
	uint32_t delivery_timeout_s; /* the end of DATA waits this long at most */
	uint32_t max_spf_checks;     /* SPF checks in flight at most */

	/* [dataplane] body memory, per worker */
	uint32_t body_budget_mb;

	/* [ipv6-ptr], [ipv4-ptr]: the rules' settings */
	struct policy policy;

	/* [faults]: a seeded fault shim around rx/tx, for tests only */
	uint32_t fault_rx_drop, fault_rx_dup, fault_rx_reorder;
	uint32_t fault_tx_drop, fault_tx_dup, fault_tx_reorder;
	uint32_t fault_seed;
	uint32_t fault_spf_lost_from; /* the Nth MAIL of a session on: its
					  early SPF request is lost (0: never) */
	uint32_t fault_spool_stall_s; /* a delivery waits this long first */

	/* [tls]: STARTTLS when cert is set */
	char tls_cert[CONFIG_PATH_LEN], tls_key[CONFIG_PATH_LEN];
	char tls_rsa_cert[CONFIG_PATH_LEN], tls_rsa_key[CONFIG_PATH_LEN];
	char tls_chain[CONFIG_PATH_LEN];
	uint32_t tls_min_version;  /* 12 or 13 */
	uint32_t tls_max_sessions; /* per worker */
	uint32_t tls_ticket_rotate_s;
	bool tls_refuse_early; /* refuse_before_handshake */

	/* [log] */
	char log_file[CONFIG_PATH_LEN];
	uint32_t log_level; /* rte_log levels: 1 emergency .. 8 debug */
};

/* Fill cfg from the file at path. On failure, writes one line to err and
 * returns -1. */
int config_load(const char *path, struct edge_config *cfg, FILE *err);

struct tls_ctx_params;
/* The [tls] files and versions as tls_ctx_create() takes them (the ticket
 * keys are the caller's). */
void config_tls_params(const struct edge_config *cfg, struct tls_ctx_params *p);

/* Is domain (any case, no trailing dot) one we accept mail for? */
bool config_domain_accepted(const struct edge_config *cfg, const char *domain, size_t len);

#endif
