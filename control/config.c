/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/config.c — the configuration file, checked before anything starts.
 *
 * rte_cfgfile does the INI parsing; this file owns what the keys mean. A
 * table declares every key once (section, name, how its value is parsed,
 * where it goes, its default), so the parser, the unknown-key check and the
 * defaults cannot drift apart. rte_cfgfile gives no line numbers and drops
 * over-long values silently, so a short syntax pass over the raw lines runs
 * first and names the line of any malformed one.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <rte_cfgfile.h>

#include "tls/tls.h"

#include "common/sizing.h"

#include "control/config.h"

#define WHY_LEN         256
/* The longest domain name as text, without the final dot: 255 octets on the
 * wire (RFC 1035 §2.3.4) less the first label's length octet and the root's.
 * auth/spf_syntax.h has the same bound for SPF; config does not use SPF's. */
#define DOMAIN_TEXT_MAX 253

struct cfg_key;
typedef int (*cfg_parse_fn)(const struct cfg_key *k, const char *val, struct edge_config *cfg,
			    char *why);

struct cfg_key {
	const char *section;
	const char *name;
	cfg_parse_fn parse;
	size_t off;        /* into struct edge_config */
	uint32_t min, max; /* for numbers */
	const char *def;   /* NULL: no default */
	bool list;         /* may be given more than once: each adds */
};

/* [smtp] idle_timeout_min_s when not given (or idle_timeout_s when that is
 * shorter): half a minute still lets a client between two commands finish
 * its next, and turns a full table over twice a minute. */
#define CONFIG_IDLE_MIN_S_DEFAULT 30

#define OFF(f)              offsetof(struct edge_config, f)
#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->off))

/* The value in a message is cut at 120 characters: enough to recognise. */
static int
why_set(char *why, const char *fmt, const char *val)
{
	char v[121];
	size_t n = strnlen(val, sizeof(v) - 1);

	memcpy(v, val, n);
	v[n] = '\0';
	snprintf(why, WHY_LEN, fmt, v);
	return -1;
}

/* RFC 1035/1123 host name: LDH labels of 1..63, DOMAIN_TEXT_MAX in all; a
 * final dot is dropped. Stored lower-case. */
static int
parse_domain_into(const char *val, char *out, char *why)
{
	size_t n = strlen(val), label = 0, i;

	if (n > 0 && val[n - 1] == '.')
		n--;
	if (n == 0 || n > DOMAIN_TEXT_MAX)
		return why_set(why, "\"%s\" is not a domain name (length)", val);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)val[i];

		if (c == '.') {
			if (label == 0 || val[i - 1] == '-')
				return why_set(
					why,
					"\"%s\" is not a domain name (empty label or label ends with '-')",
					val);
			out[i] = '.';
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return why_set(why, "\"%s\" is not a domain name (bad character)", val);
		if ((label == 0 && c == '-') || ++label > 63)
			return why_set(why, "\"%s\" is not a domain name (bad label)", val);
		out[i] = (char)tolower(c);
	}
	if (val[n - 1] == '-')
		return why_set(why, "\"%s\" is not a domain name (label ends with '-')", val);
	out[n] = '\0';
	return 0;
}

static int
parse_domain(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	return parse_domain_into(val, FIELD(cfg, k, char), why);
}

static int
parse_ip6(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	uint8_t *a = FIELD(cfg, k, uint8_t);

	if (inet_pton(AF_INET6, val, a) != 1)
		return why_set(why, "\"%s\" is not an IPv6 address", val);
	if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
		return why_set(why, "\"%s\" must be a global unicast address", val);
	cfg->has_addr6 = true;
	return 0;
}

static int
parse_ip4(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	uint8_t *a = FIELD(cfg, k, uint8_t);

	if (inet_pton(AF_INET, val, a) != 1)
		return why_set(why, "\"%s\" is not an IPv4 address", val);
	if (a[0] == 0 || a[0] >= 224 || a[0] == 127)
		return why_set(why, "\"%s\" must be a unicast address", val);
	cfg->has_addr4 = true;
	return 0;
}

static int
parse_number(const char *val, uint32_t min, uint32_t max, uint32_t *out, char *why)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(val, &end, 10);
	if (errno || end == val || *end != '\0' || !isdigit((unsigned char)*val))
		return why_set(why, "\"%s\" is not a number", val);
	if (v < min || v > max) {
		snprintf(why, WHY_LEN, "%s is out of range (%u..%u)", val, min, max);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

static int
parse_u32(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	return parse_number(val, k->min, k->max, FIELD(cfg, k, uint32_t), why);
}

/* Calls each() on each space-separated word of val. */
static int
for_words(const char *val, char *why,
	  int (*each)(const char *w, struct edge_config *cfg, char *why), struct edge_config *cfg)
{
	char buf[CFG_VALUE_LEN], *save = NULL, *w;

	snprintf(buf, sizeof(buf), "%s", val);
	for (w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save))
		if (each(w, cfg, why) < 0)
			return -1;
	return 0;
}

static int
add_port(const char *w, struct edge_config *cfg, char *why)
{
	uint32_t p, i;

	if (parse_number(w, 1, 65535, &p, why) < 0)
		return -1;
	for (i = 0; i < cfg->n_smtp_ports; i++)
		if (cfg->smtp_ports[i] == p)
			return why_set(why, "port %s is listed twice", w);
	if (cfg->n_smtp_ports == CONFIG_MAX_PORTS)
		return why_set(why, "too many ports (at most 8): %s", w);
	cfg->smtp_ports[cfg->n_smtp_ports++] = (uint16_t)p;
	return 0;
}

static int
parse_ports(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	return for_words(val, why, add_port, cfg);
}

/* libunbound's forwarder syntax: an address, optionally @port. */
static int
add_dns(const char *w, struct edge_config *cfg, char *why)
{
	char addr[64];
	const char *at = strchr(w, '@');
	uint8_t tmp[16];
	uint32_t port;
	size_t n = at ? (size_t)(at - w) : strlen(w);

	if (n >= sizeof(addr))
		return why_set(why, "\"%s\" is not address[@port]", w);
	memcpy(addr, w, n);
	addr[n] = '\0';
	if (inet_pton(AF_INET, addr, tmp) != 1 && inet_pton(AF_INET6, addr, tmp) != 1)
		return why_set(why, "\"%s\" is not an IP address[@port]", w);
	if (at && parse_number(at + 1, 1, 65535, &port, why) < 0)
		return -1;
	if (cfg->n_dns_servers == CONFIG_MAX_DNS)
		return why_set(why, "too many servers (at most 4): %s", w);
	snprintf(cfg->dns_servers[cfg->n_dns_servers++], sizeof(cfg->dns_servers[0]), "%s", w);
	return 0;
}

static int
parse_dns(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	return for_words(val, why, add_dns, cfg);
}

static int
add_domain(const char *w, struct edge_config *cfg, char *why)
{
	if (cfg->n_domains == CONFIG_MAX_DOMAINS)
		return why_set(why, "too many domains (at most 256): %s", w);
	if (parse_domain_into(w, cfg->domains[cfg->n_domains], why) < 0)
		return -1;
	cfg->n_domains++;
	return 0;
}

static int
parse_domains(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	return for_words(val, why, add_domain, cfg);
}

/* "[v6addr]:port", "v4addr:port" or "host:port". */
static int
parse_target(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	const char *colon = strrchr(val, ':');
	char host[CONFIG_NAME_LEN], tmp[CONFIG_NAME_LEN];
	uint8_t a[16];
	uint32_t port;
	size_t n;

	if (!colon || colon == val)
		return why_set(why, "\"%s\" is not host:port or [v6addr]:port", val);
	if (parse_number(colon + 1, 1, 65535, &port, why) < 0)
		return -1;
	n = (size_t)(colon - val);
	if (n >= sizeof(host))
		return why_set(why, "\"%s\": host too long", val);
	memcpy(host, val, n);
	host[n] = '\0';
	if (host[0] == '[') {
		if (n < 3 || host[n - 1] != ']')
			return why_set(why, "\"%s\": unclosed [", val);
		host[n - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, a) != 1)
			return why_set(why, "\"%s\": not an IPv6 address in []", val);
	} else if (strchr(host, ':')) {
		return why_set(why, "\"%s\": write an IPv6 address as [addr]:port", val);
	} else if (inet_pton(AF_INET, host, a) != 1 && parse_domain_into(host, tmp, why) < 0) {
		return -1;
	}
	snprintf(FIELD(cfg, k, char), CONFIG_NAME_LEN, "%s", val);
	return 0;
}

static int
parse_dir(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	if (val[0] != '/')
		return why_set(why, "\"%s\" must be an absolute path", val);
	if (strlen(val) >= CONFIG_PATH_LEN - 32)
		return why_set(why, "\"%s\": path too long", val);
	snprintf(FIELD(cfg, k, char), CONFIG_PATH_LEN, "%s", val);
	return 0;
}

static int
parse_file(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	if (parse_dir(k, val, cfg, why) < 0)
		return -1;
	if (access(val, R_OK) != 0)
		return why_set(why, "\"%s\" cannot be read", val);
	return 0;
}

static int
parse_tls_version(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	if (strcmp(val, "1.2") == 0)
		cfg->tls_min_version = 12;
	else if (strcmp(val, "1.3") == 0)
		cfg->tls_min_version = 13;
	else
		return why_set(why, "\"%s\" is neither 1.2 nor 1.3", val);
	return 0;
}

static int
parse_yes_no(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	bool *b = FIELD(cfg, k, bool);

	if (strcasecmp(val, "yes") == 0)
		*b = true;
	else if (strcasecmp(val, "no") == 0)
		*b = false;
	else
		return why_set(why, "\"%s\" is neither yes nor no", val);
	return 0;
}

static int
parse_protocol(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	if (strcasecmp(val, "smtp") == 0)
		cfg->relay_protocol = RELAY_SMTP;
	else if (strcasecmp(val, "lmtp") == 0)
		cfg->relay_protocol = RELAY_LMTP;
	else
		return why_set(why, "\"%s\" is neither smtp nor lmtp", val);
	return 0;
}

static int
parse_level(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	static const char *const names[] = { "emergency", "alert",  "critical", "error",
					     "warning",   "notice", "info",     "debug" };
	uint32_t i;

	(void)k;
	for (i = 0; i < 8; i++)
		if (strcasecmp(val, names[i]) == 0) {
			cfg->log_level = i + 1;
			return 0;
		}
	return why_set(
		why,
		"\"%s\" is not one of emergency alert critical error warning notice info debug",
		val);
}

static int
parse_rule(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	return policy_set(&cfg->policy, k->section, k->name, val, why, WHY_LEN);
}

static int
parse_pregreet(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	(void)k;
	if (strcasecmp(val, "record") == 0)
		cfg->pregreet_reject = false;
	else if (strcasecmp(val, "reject") == 0)
		cfg->pregreet_reject = true;
	else
		return why_set(why, "\"%s\" is neither record nor reject", val);
	return 0;
}

static int
parse_size(const struct cfg_key *k, const char *val, struct edge_config *cfg, char *why)
{
	uint32_t mb;

	(void)k;
	if (parse_number(val, 1, 1024, &mb, why) < 0)
		return -1;
	cfg->max_message_size = (uint64_t)mb << 20;
	return 0;
}

#define RULE_KEYS(rule, def_action)                                  \
	{ rule, "action", parse_rule, 0, 0, 0, def_action, false },  \
		{ rule, "reply", parse_rule, 0, 0, 0, NULL, false }, \
		{ rule, "stage", parse_rule, 0, 0, 0, NULL, false }, \
	{                                                            \
		rule, "fcrdns", parse_rule, 0, 0, 0, NULL, false     \
	}

#define FAULT_KEY(name, field)                                            \
	{                                                                 \
		"faults", name, parse_u32, OFF(field), 0, 50, NULL, false \
	}

/* The whole vocabulary of the file. The README documents each row. */
static const struct cfg_key keys[] = {
	{ "edge", "hostname", parse_domain, OFF(hostname), 0, 0, NULL, false },
	{ "edge", "authserv_id", parse_domain, OFF(authserv_id), 0, 0, NULL, false },
	{ "edge", "address6", parse_ip6, OFF(addr6), 0, 0, NULL, false },
	{ "edge", "address4", parse_ip4, OFF(addr4), 0, 0, NULL, false },
	{ "edge", "smtp_ports", parse_ports, 0, 0, 0, "25", true },
	{ "dns", "server", parse_dns, 0, 0, 0, NULL, true },
	{ "dns", "timeout_ms", parse_u32, OFF(dns_timeout_ms), 100, 60000, "3000", false },
	{ "dns", "trust_anchor", parse_file, OFF(dns_trust_anchor), 0, 0, NULL, false },
	{ "domains", "accept", parse_domains, 0, 0, 0, NULL, true },
	{ "relay", "target", parse_target, OFF(relay_target), 0, 0, NULL, false },
	{ "relay", "spool", parse_dir, OFF(spool_dir), 0, 0, NULL, false },
	{ "relay", "protocol", parse_protocol, 0, 0, 0, "smtp", false },
	{ "relay", "connections", parse_u32, OFF(relay_connections), 1, 1024, "64", false },
	{ "dataplane", "mbufs", parse_u32, OFF(mbufs), 1023, 4194303, "8191", false },
	{ "dataplane", "rx_desc", parse_u32, OFF(rx_desc), 64, 16384, "1024", false },
	{ "dataplane", "tx_desc", parse_u32, OFF(tx_desc), 64, 16384, "1024", false },
	{ "dataplane", "mtu", parse_u32, OFF(mtu), 1280, 9000, "1500", false },
	{ "dataplane", "flows", parse_u32, OFF(flows), 64, 16777216, NULL, false },
	{ "dataplane", "session_buffers", parse_u32, OFF(session_buffers), 1, 16777216, NULL,
	  false },
	{ "dataplane", "memory_mb", parse_u32, OFF(memory_mb), 32, 1048576, "512", false },
	{ "dataplane", "body_budget_mb", parse_u32, OFF(body_budget_mb), 4, 1048576, "256", false },
	{ "smtp", "max_cmd_line", parse_u32, OFF(max_cmd_line), 512, 2048, "512", false },
	{ "smtp", "max_text_line", parse_u32, OFF(max_text_line), 1000, 65536, "1000", false },
	{ "smtp", "max_recipients", parse_u32, OFF(max_rcpts), 100, 10000, "100", false },
	{ "smtp", "max_message_mb", parse_size, 0, 0, 0, "32", false },
	{ "smtp", "max_errors", parse_u32, OFF(max_errors), 1, 1000, "20", false },
	{ "smtp", "pregreet", parse_pregreet, 0, 0, 0, "record", false },
	{ "smtp", "idle_timeout_s", parse_u32, OFF(idle_timeout_s), 10, 3600, "300", false },
	{ "smtp", "lifetime_s", parse_u32, OFF(lifetime_s), 30, 86400, "3600", false },
	{ "smtp", "idle_pressure_pct", parse_u32, OFF(idle_pressure_pct), 1, 100, "75", false },
	{ "smtp", "idle_timeout_min_s", parse_u32, OFF(idle_timeout_min_s), 1, 3600, NULL, false },
	{ "control", "threads", parse_u32, OFF(control_threads), 1, 64, "2", false },
	{ "control", "delivery_timeout_s", parse_u32, OFF(delivery_timeout_s), 1, 540, "300",
	  false },
	{ "control", "max_spf_checks", parse_u32, OFF(max_spf_checks), 1, 1000000, "4096", false },
	RULE_KEYS("ipv6-ptr", "enforce"),
	RULE_KEYS("ipv4-ptr", "off"),
	{ "ipv6-auth", "action", parse_rule, 0, 0, 0, NULL, false },
	{ "ipv6-auth", "reply", parse_rule, 0, 0, 0, NULL, false },
	{ "ipv4-auth", "action", parse_rule, 0, 0, 0, NULL, false },
	{ "ipv4-auth", "reply", parse_rule, 0, 0, 0, NULL, false },
	FAULT_KEY("rx_drop_pct", fault_rx_drop),
	FAULT_KEY("rx_dup_pct", fault_rx_dup),
	FAULT_KEY("rx_reorder_pct", fault_rx_reorder),
	FAULT_KEY("tx_drop_pct", fault_tx_drop),
	FAULT_KEY("tx_dup_pct", fault_tx_dup),
	FAULT_KEY("tx_reorder_pct", fault_tx_reorder),
	{ "faults", "seed", parse_u32, OFF(fault_seed), 0, 4294967295u, NULL, false },
	FAULT_KEY("spf_lost_from_mail", fault_spf_lost_from),
	FAULT_KEY("spool_stall_s", fault_spool_stall_s),
	{ "tls", "cert", parse_file, OFF(tls_cert), 0, 0, NULL, false },
	{ "tls", "key", parse_file, OFF(tls_key), 0, 0, NULL, false },
	{ "tls", "rsa_cert", parse_file, OFF(tls_rsa_cert), 0, 0, NULL, false },
	{ "tls", "rsa_key", parse_file, OFF(tls_rsa_key), 0, 0, NULL, false },
	{ "tls", "chain", parse_file, OFF(tls_chain), 0, 0, NULL, false },
	{ "tls", "min_version", parse_tls_version, 0, 0, 0, "1.2", false },
	{ "tls", "max_sessions", parse_u32, OFF(tls_max_sessions), 1, 16777216, "4096", false },
	{ "tls", "ticket_rotate_s", parse_u32, OFF(tls_ticket_rotate_s), 60, 604800, "3600",
	  false },
	{ "tls", "refuse_before_handshake", parse_yes_no, OFF(tls_refuse_early), 0, 0, "no",
	  false },
	{ "log", "file", parse_dir, OFF(log_file), 0, 0, NULL, false },
	{ "log", "level", parse_level, 0, 0, 0, "info", false },
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const struct cfg_key *
key_find(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool
section_known(const char *section)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0)
			return true;
	return false;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* The lines rte_cfgfile would reject or truncate without saying where. */
static int
syntax_check(const char *path, FILE *f, FILE *err)
{
	char line[1024], *s, *eq;
	char section[CFG_NAME_LEN] = "";
	unsigned lineno = 0;

	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(err, "smtpedge: %s:%u: line too long\n", path, lineno);
			return -1;
		}
		if ((s = strchr(line, ';')))
			*s = '\0';
		s = trim(line);
		if (*s == '\0')
			continue;
		if (*s == '[') {
			size_t n = strlen(s);

			if (s[n - 1] != ']' || n < 3 || n - 2 >= CFG_NAME_LEN) {
				fprintf(err, "smtpedge: %s:%u: malformed section header \"%s\"\n",
					path, lineno, s);
				return -1;
			}
			snprintf(section, sizeof(section), "%.*s", (int)(n - 2), s + 1);
			continue;
		}
		eq = strchr(s, '=');
		if (!eq) {
			fprintf(err,
				"smtpedge: %s:%u: expected \"[section]\" or \"key = value\", got \"%s\"\n",
				path, lineno, s);
			return -1;
		}
		*eq = '\0';
		if (!section[0]) {
			fprintf(err, "smtpedge: %s:%u: key \"%s\" before any [section]\n", path,
				lineno, trim(s));
			return -1;
		}
		if (*trim(s) == '\0' || strlen(trim(s)) >= CFG_NAME_LEN) {
			fprintf(err, "smtpedge: %s:%u: bad key name\n", path, lineno);
			return -1;
		}
		if (*trim(eq + 1) == '\0') {
			fprintf(err, "smtpedge: %s:%u: [%s] %s: empty value\n", path, lineno,
				section, trim(s));
			return -1;
		}
		if (strlen(trim(eq + 1)) >= CFG_VALUE_LEN) {
			fprintf(err,
				"smtpedge: %s:%u: [%s] %s: value longer than %d characters (list keys may be repeated instead)\n",
				path, lineno, section, trim(s), CFG_VALUE_LEN - 1);
			return -1;
		}
	}
	return 0;
}

static int
apply(const char *path, const char *section, const struct cfg_key *k, const char *val,
      struct edge_config *cfg, FILE *err)
{
	char why[WHY_LEN];

	if (k->parse(k, val, cfg, why) < 0) {
		fprintf(err, "smtpedge: %s: [%s] %s: %s\n", path, section, k->name, why);
		return -1;
	}
	return 0;
}

/* A [tls] key given without its partner. */
static int
tls_pair(const char *path, const char *a, const char *va, const char *b, const char *vb, FILE *err)
{
	if (va[0] && !vb[0]) {
		fprintf(err, "smtpedge: %s: [tls] %s: missing (%s is given)\n", path, b, a);
		return -1;
	}
	return 0;
}

/* The certificates and keys are loaded once here, as the workers will
 * load them, so that a bad one stops the start with one line. */
static int
check_tls(const char *path, const struct edge_config *cfg, FILE *err)
{
	struct tls_ctx_params p;
	struct tls_ctx *ctx;
	const char *key = "cert";
	char why[WHY_LEN];

	if (tls_pair(path, "cert", cfg->tls_cert, "key", cfg->tls_key, err) < 0 ||
	    tls_pair(path, "key", cfg->tls_key, "cert", cfg->tls_cert, err) < 0 ||
	    tls_pair(path, "rsa_cert", cfg->tls_rsa_cert, "rsa_key", cfg->tls_rsa_key, err) < 0 ||
	    tls_pair(path, "rsa_key", cfg->tls_rsa_key, "rsa_cert", cfg->tls_rsa_cert, err) < 0 ||
	    tls_pair(path, "rsa_cert", cfg->tls_rsa_cert, "cert", cfg->tls_cert, err) < 0 ||
	    tls_pair(path, "chain", cfg->tls_chain, "cert", cfg->tls_cert, err) < 0)
		return -1;
	if (!cfg->tls_cert[0])
		return 0;
	config_tls_params(cfg, &p);
	ctx = tls_ctx_create(&p, &key, why, sizeof(why));
	if (!ctx) {
		fprintf(err, "smtpedge: %s: [tls] %s: %s\n", path, key, why);
		return -1;
	}
	tls_ctx_put(ctx);
	return 0;
}

void
config_tls_params(const struct edge_config *cfg, struct tls_ctx_params *p)
{
	memset(p, 0, sizeof(*p));
	p->cert = cfg->tls_cert;
	p->key = cfg->tls_key;
	p->rsa_cert = cfg->tls_rsa_cert;
	p->rsa_key = cfg->tls_rsa_key;
	p->chain = cfg->tls_chain;
	p->min_version = (int)cfg->tls_min_version;
}

/*
 * flows and session_buffers from memory_mb when not given, and a refusal
 * when the ones given need more than it (common/sizing.h has the costs).
 * The EAL memory (-m) must hold memory_mb for each worker besides the body
 * budget and the mbufs; a shortfall there stops the start with its own line.
 */
static int
check_memory(const char *path, struct edge_config *cfg, FILE *err)
{
	uint64_t have = (uint64_t)cfg->memory_mb << 20, need;

	if (cfg->flows == 0) {
		cfg->flows = sizing_max_flows(have);
		if (cfg->flows < 64) {
			fprintf(err,
				"smtpedge: %s: [dataplane] memory_mb: %u MiB holds no useful number of flows (64 need %llu MiB)\n",
				path, cfg->memory_mb,
				(unsigned long long)(sizing_worker_bytes(64, 64) >> 20) + 1);
			return -1;
		}
	}
	if (cfg->session_buffers == 0)
		cfg->session_buffers = sizing_default_buffers(cfg->flows);
	if (cfg->session_buffers > cfg->flows) {
		fprintf(err,
			"smtpedge: %s: [dataplane] session_buffers: %u is more than flows (%u)\n",
			path, cfg->session_buffers, cfg->flows);
		return -1;
	}
	need = sizing_worker_bytes(cfg->flows, cfg->session_buffers);
	if (need > have) {
		fprintf(err,
			"smtpedge: %s: [dataplane] flows: %u flows and %u session buffers need %llu MiB per worker, memory_mb is %u (it holds %u flows)\n",
			path, cfg->flows, cfg->session_buffers,
			(unsigned long long)((need + (1u << 20) - 1) >> 20), cfg->memory_mb,
			sizing_max_flows(have));
		return -1;
	}
	return 0;
}

/* Cross-key rules, after every key has its value. */
static int
check_whole(const char *path, struct edge_config *cfg, FILE *err)
{
	if (cfg->hostname[0] == '\0') {
		fprintf(err,
			"smtpedge: %s: [edge] hostname: missing (the name in the greeting and headers)\n",
			path);
		return -1;
	}
	if (cfg->authserv_id[0] == '\0')
		snprintf(cfg->authserv_id, sizeof(cfg->authserv_id), "%s", cfg->hostname);
	if (!cfg->has_addr6 && !cfg->has_addr4) {
		fprintf(err,
			"smtpedge: %s: [edge] address6: missing (give address6, address4 or both)\n",
			path);
		return -1;
	}
	if (cfg->n_domains == 0) {
		fprintf(err,
			"smtpedge: %s: [domains] accept: missing (with no domain every recipient is refused)\n",
			path);
		return -1;
	}
	if (cfg->idle_timeout_min_s == 0) /* not given */
		cfg->idle_timeout_min_s = cfg->idle_timeout_s < CONFIG_IDLE_MIN_S_DEFAULT ?
						  cfg->idle_timeout_s :
						  CONFIG_IDLE_MIN_S_DEFAULT;
	if (cfg->idle_timeout_min_s > cfg->idle_timeout_s) {
		fprintf(err,
			"smtpedge: %s: [smtp] idle_timeout_min_s: %u is above idle_timeout_s (%u)\n",
			path, cfg->idle_timeout_min_s, cfg->idle_timeout_s);
		return -1;
	}
	if (cfg->relay_target[0] && cfg->spool_dir[0]) {
		fprintf(err, "smtpedge: %s: [relay] spool: give target or spool, not both\n", path);
		return -1;
	}
	if (!cfg->relay_target[0] && !cfg->spool_dir[0]) {
		fprintf(err,
			"smtpedge: %s: [relay] target: missing (give target, or spool for a local Maildir)\n",
			path);
		return -1;
	}
	if (check_memory(path, cfg, err) < 0)
		return -1;
	return check_tls(path, cfg, err);
}

static int
apply_file(const char *path, struct rte_cfgfile *file, struct edge_config *cfg, FILE *err)
{
	int ns = rte_cfgfile_num_sections(file, NULL, 0), i, j;
	bool seen[N_KEYS] = { false };
	char names[64][CFG_NAME_LEN];

	if (ns > 64) {
		fprintf(err, "smtpedge: %s: too many sections\n", path);
		return -1;
	}
	{
		char *ptrs[64];

		for (i = 0; i < 64; i++)
			ptrs[i] = names[i];
		rte_cfgfile_sections(file, ptrs, ns);
	}
	for (i = 0; i < ns; i++) {
		const char *sec = names[i];
		int ne = rte_cfgfile_section_num_entries(file, sec);
		struct rte_cfgfile_entry *ents;

		if (!section_known(sec)) {
			fprintf(err, "smtpedge: %s: [%s]: unknown section\n", path, sec);
			return -1;
		}
		for (j = 0; j < i; j++)
			if (strcmp(names[j], sec) == 0) {
				fprintf(err, "smtpedge: %s: [%s]: section given twice\n", path,
					sec);
				return -1;
			}
		if (ne <= 0)
			continue;
		ents = calloc((size_t)ne, sizeof(*ents));
		if (!ents) {
			fprintf(err, "smtpedge: %s: out of memory\n", path);
			return -1;
		}
		rte_cfgfile_section_entries(file, sec, ents, ne);
		for (j = 0; j < ne; j++) {
			const struct cfg_key *k = key_find(sec, ents[j].name);

			if (!k) {
				fprintf(err, "smtpedge: %s: [%s] %s: unknown key\n", path, sec,
					ents[j].name);
				free(ents);
				return -1;
			}
			if (seen[k - keys] && !k->list) {
				fprintf(err, "smtpedge: %s: [%s] %s: given twice\n", path, sec,
					k->name);
				free(ents);
				return -1;
			}
			seen[k - keys] = true;
			if (apply(path, sec, k, ents[j].value, cfg, err) < 0) {
				free(ents);
				return -1;
			}
		}
		free(ents);
	}
	for (i = 0; i < (int)N_KEYS; i++)
		if (!seen[i] && keys[i].def &&
		    apply(path, keys[i].section, &keys[i], keys[i].def, cfg, err) < 0)
			return -1;
	return 0;
}

int
config_load(const char *path, struct edge_config *cfg, FILE *err)
{
	struct rte_cfgfile *file;
	FILE *f;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	policy_defaults(&cfg->policy);
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	f = fopen(path, "r");
	if (!f) {
		fprintf(err, "smtpedge: %s: cannot open: %s\n", path, strerror(errno));
		return -1;
	}
	rc = syntax_check(path, f, err);
	fclose(f);
	if (rc < 0)
		return -1;
	file = rte_cfgfile_load(path, 0);
	if (!file) {
		fprintf(err, "smtpedge: %s: cannot be parsed\n", path);
		return -1;
	}
	rc = apply_file(path, file, cfg, err);
	rte_cfgfile_close(file);
	if (rc < 0)
		return -1;
	return check_whole(path, cfg, err);
}

bool
config_domain_accepted(const struct edge_config *cfg, const char *domain, size_t len)
{
	uint32_t i;

	if (len > 0 && domain[len - 1] == '.')
		len--;
	for (i = 0; i < cfg->n_domains; i++)
		if (strlen(cfg->domains[i]) == len &&
		    strncasecmp(cfg->domains[i], domain, len) == 0)
			return true;
	return false;
}
