/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/policy.c — the rules' settings, their parser, and the live copy that the
 * CLI changes and the workers read (see policy.h). What a rule says for a
 * result is in common/rules.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <rte_seqlock.h>

#include "control/policy.h"

/* Which settings a rule has. */
enum { KIND_PTR = 1, KIND_AUTH = 2 };

static int
rule_kind(int id)
{
	return id == POLICY_IPV6_AUTH || id == POLICY_IPV4_AUTH ? KIND_AUTH : KIND_PTR;
}

void
policy_defaults(struct policy *p)
{
	memset(p, 0, sizeof(*p));
	p->rule[POLICY_IPV6_PTR] = (struct policy_rule){
		.action = POLICY_ENFORCE, .stage = POLICY_AT_MAIL, .fcrdns = false, .reply = 550
	};
	p->rule[POLICY_IPV4_PTR] = (struct policy_rule){
		.action = POLICY_OFF, .stage = POLICY_AT_MAIL, .fcrdns = false, .reply = 550
	};
	/* Soft mode by default: the sender retries, perhaps over IPv4. */
	p->rule[POLICY_IPV6_AUTH] = (struct policy_rule){ .action = POLICY_ENFORCE, .reply = 450 };
	p->rule[POLICY_IPV4_AUTH] = (struct policy_rule){ .action = POLICY_OFF, .reply = 450 };
}

/* The settings: one row each, with the rules that have it and the words
 * it accepts. */
struct setting {
	const char *key;
	int kinds;
	const char *const words[4]; /* NULL-terminated */
	void (*store)(struct policy_rule *r, int which);
	int (*load)(const struct policy_rule *r);
};

static void
store_action(struct policy_rule *r, int w)
{
	r->action = (uint8_t)w;
}
static int
load_action(const struct policy_rule *r)
{
	return r->action;
}
static void
store_stage(struct policy_rule *r, int w)
{
	r->stage = (uint8_t)w;
}
static int
load_stage(const struct policy_rule *r)
{
	return r->stage;
}
static void
store_fcrdns(struct policy_rule *r, int w)
{
	r->fcrdns = w == 0;
}
static int
load_fcrdns(const struct policy_rule *r)
{
	return r->fcrdns ? 0 : 1;
}
static void
store_reply(struct policy_rule *r, int w)
{
	r->reply = w == 0 ? 550 : 450;
}
static int
load_reply(const struct policy_rule *r)
{
	return r->reply == 550 ? 0 : 1;
}
static void
store_auth_reply(struct policy_rule *r, int w)
{
	r->reply = w == 0 ? 450 : 554;
}
static int
load_auth_reply(const struct policy_rule *r)
{
	return r->reply == 450 ? 0 : 1;
}

static const struct setting settings[] = {
	{ "action",
	  KIND_PTR | KIND_AUTH,
	  { "enforce", "log", "off", NULL },
	  store_action,
	  load_action },
	{ "reply", KIND_PTR, { "550", "450", NULL }, store_reply, load_reply },
	{ "reply", KIND_AUTH, { "450", "554", NULL }, store_auth_reply, load_auth_reply },
	{ "stage", KIND_PTR, { "connect", "mail", "rcpt", NULL }, store_stage, load_stage },
	{ "fcrdns", KIND_PTR, { "yes", "no", NULL }, store_fcrdns, load_fcrdns },
};
#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

int
policy_set(struct policy *p, const char *rule, const char *key, const char *value, char *why,
	   size_t whylen)
{
	int id = policy_rule_find(rule), w;
	size_t i, off;

	if (id < 0) {
		snprintf(why, whylen,
			 "%s: no such rule (rules: ipv6-ptr ipv4-ptr ipv6-auth ipv4-auth)", rule);
		return -1;
	}
	for (i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].key, key) != 0 || !(settings[i].kinds & rule_kind(id)))
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
		 void (*each)(void *arg, const char *key, const char *val), void *arg)
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
		f->off += (size_t)snprintf(
			f->out + f->off, f->n - f->off, "%s%s=%s", f->off ? " " : "", key, val);
}

void
policy_rule_format(int id, const struct policy_rule *r, char *out, size_t n)
{
	struct fmt_state f = { out, n, 0 };

	out[0] = '\0';
	policy_rule_each(id, r, fmt_one, &f);
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
policy_live_change(const char *rule, const char *const *keys, const char *const *values, unsigned n,
		   char *why, size_t whylen, struct policy *before, struct policy *after)
{
	struct policy p;
	unsigned i;
	int rc = 0;

	pthread_mutex_lock(&live.writers);
	p = live.p; /* only writers change it, and we are the one */
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
policy_live_set(const char *rule, const char *key, const char *value, char *why, size_t whylen)
{
	return policy_live_change(rule, &key, &value, 1, why, whylen, NULL, NULL);
}
