/*
 * policy.c - the rule table, its settings, its replies, and the live copy
 * that the CLI changes and the workers read (see policy.h).
 *
 * The reply texts follow what Microsoft's Exchange Online Protection sends
 * (REFERENCES.md): 550 5.7.25 by default, 450 4.7.25 as EOP replies today.
 * A temporary DNS failure is a 451 4.7.25 whatever the setting: an outage of
 * ours must never bounce anyone's mail.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <rte_seqlock.h>

#include "control/policy.h"

static const char *const rule_names[POLICY__RULES] = {
	[POLICY_IPV6_PTR] = "ipv6-ptr",
	[POLICY_IPV4_PTR] = "ipv4-ptr",
	[POLICY_IPV6_AUTH] = "ipv6-auth",
	[POLICY_IPV4_AUTH] = "ipv4-auth",
};

/* Which settings a rule has. */
enum { KIND_PTR = 1, KIND_AUTH = 2 };

static int
rule_kind(int id)
{
	return id == POLICY_IPV6_AUTH || id == POLICY_IPV4_AUTH ? KIND_AUTH : KIND_PTR;
}

static const char *const outcome_names[POLICY__OUTCOMES] = {
	[POLICY_PASS] = "pass",
	[POLICY_REJECT] = "reject",
	[POLICY_DEFER] = "defer",
	[POLICY_LOGGED] = "logged",
};

static const char *const ptr_names[PTR__RESULTS] = {
	[PTR_UNKNOWN] = "unknown",
	[PTR_PASS] = "pass",
	[PTR_NONE] = "none",
	[PTR_MISMATCH] = "mismatch",
	[PTR_TEMPERROR] = "temperror",
};

const char *
ptr_result_name(enum ptr_result r)
{
	return (unsigned)r < PTR__RESULTS ? ptr_names[r] : "?";
}

const char *
policy_rule_name(enum policy_rule_id id)
{
	return (unsigned)id < POLICY__RULES ? rule_names[id] : "?";
}

const char *
policy_outcome_name(enum policy_outcome o)
{
	return (unsigned)o < POLICY__OUTCOMES ? outcome_names[o] : "?";
}

int
policy_rule_find(const char *name)
{
	int i;

	for (i = 0; i < POLICY__RULES; i++)
		if (strcmp(rule_names[i], name) == 0)
			return i;
	return -1;
}

void
policy_defaults(struct policy *p)
{
	memset(p, 0, sizeof(*p));
	p->rule[POLICY_IPV6_PTR] = (struct policy_rule){
		.action = POLICY_ENFORCE, .stage = POLICY_AT_MAIL,
		.fcrdns = false, .reply = 550 };
	p->rule[POLICY_IPV4_PTR] = (struct policy_rule){
		.action = POLICY_OFF, .stage = POLICY_AT_MAIL,
		.fcrdns = false, .reply = 550 };
	/* Soft mode by default: the sender retries, perhaps over IPv4. */
	p->rule[POLICY_IPV6_AUTH] = (struct policy_rule){
		.action = POLICY_ENFORCE, .reply = 450 };
	p->rule[POLICY_IPV4_AUTH] = (struct policy_rule){
		.action = POLICY_OFF, .reply = 450 };
}

/* The settings: one row each, with the rules that have it and the words
 * it accepts. */
struct setting {
	const char *key;
	int kinds;
	const char *const words[4];   /* NULL-terminated */
	void (*store)(struct policy_rule *r, int which);
	int (*load)(const struct policy_rule *r);
};

static void store_action(struct policy_rule *r, int w) { r->action = (uint8_t)w; }
static int load_action(const struct policy_rule *r) { return r->action; }
static void store_stage(struct policy_rule *r, int w) { r->stage = (uint8_t)w; }
static int load_stage(const struct policy_rule *r) { return r->stage; }
static void store_fcrdns(struct policy_rule *r, int w) { r->fcrdns = w == 0; }
static int load_fcrdns(const struct policy_rule *r) { return r->fcrdns ? 0 : 1; }
static void store_reply(struct policy_rule *r, int w) { r->reply = w == 0 ? 550 : 450; }
static int load_reply(const struct policy_rule *r) { return r->reply == 550 ? 0 : 1; }
static void store_auth_reply(struct policy_rule *r, int w) { r->reply = w == 0 ? 450 : 554; }
static int load_auth_reply(const struct policy_rule *r) { return r->reply == 450 ? 0 : 1; }

static const struct setting settings[] = {
	{ "action", KIND_PTR | KIND_AUTH, { "enforce", "log", "off", NULL }, store_action, load_action },
	{ "reply", KIND_PTR, { "550", "450", NULL }, store_reply, load_reply },
	{ "reply", KIND_AUTH, { "450", "554", NULL }, store_auth_reply, load_auth_reply },
	{ "stage", KIND_PTR, { "connect", "mail", "rcpt", NULL }, store_stage, load_stage },
	{ "fcrdns", KIND_PTR, { "yes", "no", NULL }, store_fcrdns, load_fcrdns },
};
#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

int
policy_set(struct policy *p, const char *rule, const char *key,
	   const char *value, char *why, size_t whylen)
{
	int id = policy_rule_find(rule), w;
	size_t i, off;

	if (id < 0) {
		snprintf(why, whylen, "%s: no such rule (rules: ipv6-ptr ipv4-ptr ipv6-auth ipv4-auth)", rule);
		return -1;
	}
	for (i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].key, key) != 0 ||
		    !(settings[i].kinds & rule_kind(id)))
			continue;
		for (w = 0; settings[i].words[w]; w++)
			if (strcasecmp(settings[i].words[w], value) == 0) {
				settings[i].store(&p->rule[id], w);
				return 0;
			}
		off = (size_t)snprintf(why, whylen, "%s: \"%s\" is not one of", key, value);
		for (w = 0; settings[i].words[w] && off < whylen; w++)
			off += (size_t)snprintf(why + off, whylen - off, " %s",
						settings[i].words[w]);
		return -1;
	}
	snprintf(why, whylen, "%s: no such setting (settings: %s)", key,
		 rule_kind(id) == KIND_PTR ? "action reply stage fcrdns" : "action reply");
	return -1;
}

void
policy_rule_each(int id, const struct policy_rule *r,
		 void (*each)(void *arg, const char *key, const char *val),
		 void *arg)
{
	size_t i;

	for (i = 0; i < N_SETTINGS; i++)
		if (settings[i].kinds & rule_kind(id))
			each(arg, settings[i].key, settings[i].words[settings[i].load(r)]);
}

struct fmt_state {
	char *out;
	size_t n, off;
};

static void
fmt_one(void *arg, const char *key, const char *val)
{
	struct fmt_state *f = arg;

	if (f->off < f->n)
		f->off += (size_t)snprintf(f->out + f->off, f->n - f->off, "%s%s=%s",
					   f->off ? " " : "", key, val);
}

void
policy_rule_format(int id, const struct policy_rule *r, char *out, size_t n)
{
	struct fmt_state f = { out, n, 0 };

	out[0] = '\0';
	policy_rule_each(id, r, fmt_one, &f);
}

enum policy_outcome
policy_ptr(const struct policy_rule *r, enum ptr_result res, uint8_t family,
	   const uint8_t *addr, struct policy_reply *reply)
{
	char a[INET6_ADDRSTRLEN];
	const char *fam = family == 6 ? "IPv6" : "IPv4";
	bool fails = res == PTR_NONE || (res == PTR_MISMATCH && r->fcrdns);

	if (r->action == POLICY_OFF || res == PTR_PASS || res == PTR_UNKNOWN ||
	    (!fails && res != PTR_TEMPERROR))
		return POLICY_PASS;
	if (r->action == POLICY_LOG)
		return POLICY_LOGGED;
	inet_ntop(family == 6 ? AF_INET6 : AF_INET, addr, a, sizeof(a));
	if (res == PTR_TEMPERROR) {
		reply->code = 451;
		snprintf(reply->enh, sizeof(reply->enh), "4.7.25");
		snprintf(reply->text, sizeof(reply->text),
			 "Service temporarily unavailable, the reverse DNS lookup of sending %s address [%s] failed, try again later",
			 fam, a);
		return POLICY_DEFER;
	}
	reply->code = r->reply;
	snprintf(reply->enh, sizeof(reply->enh), r->reply == 550 ? "5.7.25" : "4.7.25");
	snprintf(reply->text, sizeof(reply->text),
		 "Service unavailable, sending %s address [%s] must have a reverse DNS record",
		 fam, a);
	return POLICY_REJECT;
}

enum policy_outcome
policy_auth(const struct policy_rule *r, bool spf_pass, bool dkim_pass,
	    bool temp, uint8_t family, struct policy_reply *reply)
{
	const char *fam = family == 6 ? "IPv6" : "IPv4";

	if (r->action == POLICY_OFF || spf_pass || dkim_pass)
		return POLICY_PASS;
	if (r->action == POLICY_LOG)
		return POLICY_LOGGED;
	if (temp) {   /* a pass may have hidden behind the failure */
		reply->code = 451;
		snprintf(reply->enh, sizeof(reply->enh), "4.7.26");
		snprintf(reply->text, sizeof(reply->text),
			 "Service temporarily unavailable, SPF and DKIM could not be checked for a message sent over %s, try again later",
			 fam);
		return POLICY_DEFER;
	}
	reply->code = r->reply;
	snprintf(reply->enh, sizeof(reply->enh), r->reply == 554 ? "5.7.26" : "4.7.26");
	snprintf(reply->text, sizeof(reply->text),
		 "Service unavailable, message sent over %s must pass either SPF or DKIM validation",
		 fam);
	return POLICY_REJECT;
}

/* The live copy: the CLI's handlers write, workers read. Writers take the
 * mutex for the whole read-modify-write, so two changes made at once both
 * stay; the seqlock keeps readers lock-free. */
static struct {
	pthread_mutex_t writers;
	rte_seqlock_t lock;
	struct policy p;
} live = { .writers = PTHREAD_MUTEX_INITIALIZER, .lock = RTE_SEQLOCK_INITIALIZER };

void
policy_live_init(const struct policy *p)
{
	pthread_mutex_lock(&live.writers);
	rte_seqlock_write_lock(&live.lock);
	live.p = *p;
	rte_seqlock_write_unlock(&live.lock);
	pthread_mutex_unlock(&live.writers);
}

void
policy_live_get(struct policy *out)
{
	uint32_t sn;

	do {
		sn = rte_seqlock_read_begin(&live.lock);
		*out = live.p;
	} while (rte_seqlock_read_retry(&live.lock, sn));
}

int
policy_live_change(const char *rule, const char *const *keys,
		   const char *const *values, unsigned n, char *why,
		   size_t whylen, struct policy *before, struct policy *after)
{
	struct policy p;
	unsigned i;
	int rc = 0;

	pthread_mutex_lock(&live.writers);
	p = live.p;   /* only writers change it, and we are the one */
	if (before)
		*before = p;
	/* Validate on a copy, so a bad value changes nothing. */
	for (i = 0; i < n && rc == 0; i++)
		rc = policy_set(&p, rule, keys[i], values[i], why, whylen);
	if (rc == 0) {
		rte_seqlock_write_lock(&live.lock);
		live.p = p;
		rte_seqlock_write_unlock(&live.lock);
		if (after)
			*after = p;
	}
	pthread_mutex_unlock(&live.writers);
	return rc < 0 ? -1 : 0;
}

int
policy_live_set(const char *rule, const char *key, const char *value,
		char *why, size_t whylen)
{
	return policy_live_change(rule, &key, &value, 1, why, whylen, NULL, NULL);
}
