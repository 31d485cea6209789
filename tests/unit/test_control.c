/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_control.c — the policy rules and their replies, the transaction log
 * line (bounded whatever the peer sent) and the log file's mode, and the
 * Maildir spool (through the directories it opened) and its group commit
 * (fewer flushes than messages, each message answered once, a failing one
 * alone), each against its module alone.
 *
 * Last, the dispatcher itself, on rings as a worker feeds them (EAL without
 * hugepages, no worker): a header block lent in MSG_DKIM_HEADERS has its
 * DKIM key queried at once, and its fetch is let go by a new MAIL or by the
 * body handed back in MSG_BODY_RETURN, whose chunks the dispatcher returns
 * to their pool; the delivery request takes a fetch of its own
 * transaction, and fetches nothing again. A signed message's body is
 * hashed as the worker says its chunks are final (MSG_BODY_FINAL), before
 * the delivery request, which finishes the same job; a body handed back
 * with its job part fed frees both once, and a later MSG_BODY_FINAL for it
 * reads nothing. Under ASan no fetch or job leaks.
 *
 * Then its work threads: idle, they sleep (work_wakeups does not move in
 * 200 ms), and every job queued wakes one in time: bursts of deliveries
 * from several workers' rings at once, thousands of rounds, each answered
 * once (a lost wake-up leaves a round unanswered).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "common/chunk.h"
#include "common/msg.h"
#include "common/txrec.h"

#include "control/config.h"
#include "control/ctlplane.h"
#include "control/policy.h"
#include "control/spool.h"
#include "control/txlog.h"
#include "tests/check.h"

static uint8_t peer6[16], peer4[16];

struct ptr_case {
	const char *settings; /* "action=enforce reply=550 fcrdns=no" */
	int family;
	enum ptr_result res;
	enum policy_outcome want;
	uint16_t code;
	const char *enh;
	const char *text;
};

static const struct ptr_case ptr_cases[] = {
	{ "", 6, PTR_NONE, POLICY_REJECT, 550, "5.7.25",
	  "Service unavailable, sending IPv6 address [2001:db8:1::20] must have a reverse DNS record" },
	{ "reply=450", 6, PTR_NONE, POLICY_REJECT, 450, "4.7.25",
	  "Service unavailable, sending IPv6 address [2001:db8:1::20] must have a reverse DNS record" },
	{ "", 6, PTR_PASS, POLICY_PASS, 0, NULL, NULL },
	{ "", 6, PTR_MISMATCH, POLICY_PASS, 0, NULL, NULL }, /* fcrdns=no: a PTR is enough */
	{ "fcrdns=yes", 6, PTR_MISMATCH, POLICY_REJECT, 550, "5.7.25", NULL },
	{ "fcrdns=yes reply=450", 6, PTR_MISMATCH, POLICY_REJECT, 450, "4.7.25", NULL },
	{ "", 6, PTR_TEMPERROR, POLICY_DEFER, 451, "4.7.25",
	  "Service temporarily unavailable, the reverse DNS lookup of sending IPv6 address [2001:db8:1::20] failed, try again later" },
	{ "reply=550 fcrdns=yes", 6, PTR_TEMPERROR, POLICY_DEFER, 451, "4.7.25", NULL },
	{ "action=log", 6, PTR_NONE, POLICY_LOGGED, 0, NULL, NULL },
	{ "action=log", 6, PTR_TEMPERROR, POLICY_LOGGED, 0, NULL, NULL },
	{ "action=off", 6, PTR_NONE, POLICY_PASS, 0, NULL, NULL },
	{ "", 6, PTR_UNKNOWN, POLICY_PASS, 0, NULL, NULL },
	{ "action=enforce", 4, PTR_NONE, POLICY_REJECT, 550, "5.7.25",
	  "Service unavailable, sending IPv4 address [198.51.100.20] must have a reverse DNS record" },
};

static void
apply_settings(struct policy *p, const char *rule, const char *settings)
{
	char buf[128], why[160], *save = NULL, *kv;

	snprintf(buf, sizeof(buf), "%s", settings);
	for (kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(kv, '=');

		*eq = '\0';
		CHECK(policy_set(p, rule, kv, eq + 1, why, sizeof(why)) == 0, "%s", why);
	}
}

static void
test_ptr_rule(void)
{
	size_t i;

	for (i = 0; i < sizeof(ptr_cases) / sizeof(ptr_cases[0]); i++) {
		const struct ptr_case *c = &ptr_cases[i];
		const char *rule = c->family == 6 ? "ipv6-ptr" : "ipv4-ptr";
		struct policy p;
		struct policy_reply r = { 0 };
		enum policy_outcome o;

		policy_defaults(&p);
		apply_settings(&p, rule, c->settings);
		o = policy_ptr(&p.rule[c->family == 6 ? POLICY_IPV6_PTR : POLICY_IPV4_PTR], c->res,
			       (uint8_t)c->family, c->family == 6 ? peer6 : peer4, &r);
		CHECK(o == c->want, "case %zu (%s, %s): outcome %s, want %s", i, c->settings,
		      ptr_result_name(c->res), policy_outcome_name(o),
		      policy_outcome_name(c->want));
		if (c->code) {
			CHECK(r.code == c->code && strcmp(r.enh, c->enh) == 0, "case %zu: %u %s", i,
			      r.code, r.enh);
			CHECK(r.code < 500 || c->res != PTR_TEMPERROR, "temperror gave a 5xx");
		}
		if (c->text)
			CHECK(strcmp(r.text, c->text) == 0, "case %zu: text \"%s\"", i, r.text);
	}
}

/* The address in the refusal is written as inet_ntop() writes it, for
 * every shape of IPv6 zero runs and for IPv4: each address is checked in
 * the 550 text against inet_ntop's form. */
static void
check_addr_form(uint8_t family, const uint8_t *a, unsigned *bad)
{
	static const struct policy_rule rule = {
		.action = POLICY_ENFORCE, .stage = POLICY_AT_MAIL, .reply = 550
	};
	struct policy_reply r = { 0 };
	char want[INET6_ADDRSTRLEN], text[sizeof(r.text)];

	inet_ntop(family == 6 ? AF_INET6 : AF_INET, a, want, sizeof(want));
	snprintf(text, sizeof(text),
		 "Service unavailable, sending %s address [%s] must have a reverse DNS record",
		 family == 6 ? "IPv6" : "IPv4", want);
	policy_ptr(&rule, PTR_NONE, family, a, &r);
	if (strcmp(r.text, text) != 0 && (*bad)++ < 5)
		CHECK(false, "address %s: \"%s\"", want, r.text);
}

static void
test_ptr_addr_forms(void)
{
	uint8_t a[16];
	unsigned mask, i, bad = 0, n = 0;

	/* Every pattern of zero and non-zero groups, with values of one to
	 * four hex digits: all the runs "::" may stand for, ties included. */
	for (mask = 0; mask < 256; mask++) {
		for (i = 0; i < 8; i++) {
			uint16_t v = (uint16_t)(mask & (1u << i) ?
							0 :
							(0x1u << (4 * ((i + mask) % 4))) + i);

			a[2 * i] = (uint8_t)(v >> 8);
			a[2 * i + 1] = (uint8_t)v;
		}
		check_addr_form(6, a, &bad);
		n++;
	}
	srand(7);
	for (i = 0; i < 2000; i++) {
		unsigned k;

		for (k = 0; k < 16; k++)
			a[k] = (uint8_t)(rand() % 4 ? rand() : 0);
		check_addr_form(6, a, &bad);
		memcpy(a,
		       (const uint8_t[4]){ (uint8_t)rand(), (uint8_t)(rand() % 10),
					   (uint8_t)(rand() % 100), (uint8_t)rand() },
		       4);
		check_addr_form(4, a, &bad);
		n += 2;
	}
	CHECK(bad == 0, "%u of %u addresses written unlike inet_ntop", bad, n);
}

static void
test_auth_rule(void)
{
	struct policy p;
	struct policy_reply r;
	const struct policy_rule *a6;
	char why[160];

	policy_defaults(&p);
	a6 = &p.rule[POLICY_IPV6_AUTH];
	CHECK(policy_auth(a6, true, false, false, 6, &r) == POLICY_PASS, "SPF pass");
	CHECK(policy_auth(a6, false, true, true, 6, &r) == POLICY_PASS, "DKIM pass");
	memset(&r, 0, sizeof(r));
	CHECK(policy_auth(a6, false, false, false, 6, &r) == POLICY_REJECT && r.code == 450 &&
		      strcmp(r.enh, "4.7.26") == 0 &&
		      strcmp(r.text,
			     "Service unavailable, message sent over IPv6 must pass either SPF or DKIM validation") ==
			      0,
	      "soft mode: %u %s %s", r.code, r.enh, r.text);
	CHECK(policy_set(&p, "ipv6-auth", "reply", "554", why, sizeof(why)) == 0, "%s", why);
	CHECK(policy_auth(a6, false, false, false, 6, &r) == POLICY_REJECT && r.code == 554 &&
		      strcmp(r.enh, "5.7.26") == 0,
	      "hard mode: %u %s", r.code, r.enh);
	CHECK(policy_auth(a6, false, false, true, 6, &r) == POLICY_DEFER && r.code == 451 &&
		      strcmp(r.enh, "4.7.26") == 0,
	      "temperror in hard mode: %u", r.code);
	CHECK(policy_set(&p, "ipv6-auth", "reply", "550", why, sizeof(why)) < 0 &&
		      strcmp(why, "reply: \"550\" is not one of 450 554") == 0,
	      "%s", why);
	CHECK(policy_set(&p, "ipv6-auth", "stage", "mail", why, sizeof(why)) < 0 &&
		      strstr(why, "no such setting (settings: action reply)") != NULL,
	      "%s", why);
	CHECK(policy_set(&p, "ipv6-auth", "action", "log", why, sizeof(why)) == 0 &&
		      policy_auth(a6, false, false, false, 6, &r) == POLICY_LOGGED,
	      "action=log");
	CHECK(policy_auth(&p.rule[POLICY_IPV4_AUTH], false, false, false, 4, &r) == POLICY_PASS,
	      "ipv4-auth is off by default");
}

static void
test_settings(void)
{
	struct policy p, q;
	char why[160], line[128];

	policy_defaults(&p);
	policy_rule_format(POLICY_IPV6_PTR, &p.rule[POLICY_IPV6_PTR], line, sizeof(line));
	CHECK(strcmp(line, "action=enforce reply=550 stage=mail fcrdns=no") == 0, "%s", line);
	policy_rule_format(POLICY_IPV4_PTR, &p.rule[POLICY_IPV4_PTR], line, sizeof(line));
	CHECK(strcmp(line, "action=off reply=550 stage=mail fcrdns=no") == 0, "%s", line);

	q = p;
	CHECK(policy_set(&p, "ipv6-ptr", "reply", "999", why, sizeof(why)) < 0 &&
		      strcmp(why, "reply: \"999\" is not one of 550 450") == 0,
	      "%s", why);
	CHECK(policy_set(&p, "ipv6-ptr", "stage", "data", why, sizeof(why)) < 0 &&
		      strcmp(why, "stage: \"data\" is not one of connect mail rcpt") == 0,
	      "%s", why);
	CHECK(policy_set(&p, "ipv7-ptr", "reply", "450", why, sizeof(why)) < 0 &&
		      strstr(why, "no such rule") != NULL,
	      "%s", why);
	CHECK(policy_set(&p, "ipv6-ptr", "colour", "red", why, sizeof(why)) < 0 &&
		      strstr(why, "colour: no such setting") != NULL,
	      "%s", why);
	CHECK(memcmp(&p, &q, sizeof(p)) == 0, "a refused set changed the rules");
	CHECK(policy_set(&p, "ipv6-ptr", "stage", "RCPT", why, sizeof(why)) == 0 &&
		      p.rule[POLICY_IPV6_PTR].stage == POLICY_AT_RCPT,
	      "stage=RCPT (any case)");

	/* The live copy: a bad value changes nothing, a good one applies. */
	policy_defaults(&p);
	policy_live_init(&p);
	CHECK(policy_live_set("ipv6-ptr", "reply", "451", why, sizeof(why)) < 0, "451 accepted");
	policy_live_get(&q);
	CHECK(q.rule[POLICY_IPV6_PTR].reply == 550, "live changed by a refused set");
	CHECK(policy_live_set("ipv6-ptr", "reply", "450", why, sizeof(why)) == 0, "%s", why);
	policy_live_get(&q);
	CHECK(q.rule[POLICY_IPV6_PTR].reply == 450, "live set did not apply");
}

static void
fill_rec(struct txrec *r)
{
	memset(r, 0, sizeof(*r));
	r->session_id = 0x0001000000000007ull;
	r->time_us = 1795900575123456ull; /* 2026-11-28T21:16:15.123Z */
	r->smtp.kind = TXREC_TRANSACTION;
	r->family = 6;
	memcpy(r->addr, peer6, 16);
	r->port = 40000;
	r->ptr = PTR_NONE;
	r->ptr_outcome = POLICY_REJECT;
	r->smtp.nrcpts = 1;
	r->smtp.size = 0;
	snprintf(r->helo, sizeof(r->helo), "client.example");
	snprintf(r->mail_from, sizeof(r->mail_from), "alice@example.org");
	snprintf(r->rcpt, sizeof(r->rcpt), "bob@example.net");
	r->smtp.replies[0] = 220;
	r->smtp.replies[1] = 250;
	r->smtp.replies[2] = 550;
	r->smtp.nreplies = 3;
	r->smtp.flags = TXREC_F_PREGREET;
}

/* The value of key in line, as written (quotes included); "" if absent. */
static const char *
value_of(const char *line, const char *key, char *out, size_t n)
{
	char pat[32];
	const char *p, *e;
	bool quoted;

	snprintf(pat, sizeof(pat), " %s=", key);
	out[0] = '\0';
	p = strstr(line, pat);
	if (!p)
		return out;
	p += strlen(pat);
	quoted = *p == '"';
	for (e = p + quoted; *e && (quoted ? *e != '"' : *e != ' ' && *e != '\n'); e++)
		if (quoted && *e == '\\')
			e++;
	e += quoted;
	snprintf(out, n, "%.*s", (int)(e - p), p);
	return out;
}

/* Peer-chosen values at their largest, all needing escapes: the verdicts
 * stay, each value is bounded and cut before an escape, never inside one,
 * and the cut is named. */
static void
test_txlog_bounds(void)
{
	struct txrec r;
	char line[TXLOG_LINE_MAX], v[TXLOG_LINE_MAX];
	size_t n, i;

	fill_rec(&r);
	r.auth_checked = true;
	snprintf(r.spf, sizeof(r.spf), "fail");
	snprintf(r.dkim, sizeof(r.dkim), "none");
	r.auth_outcome = POLICY_REJECT;
	snprintf(r.queue_id, sizeof(r.queue_id), "6923AB3D7A1C20003");
	r.smtp.nreplies = TXREC_REPLIES;
	for (i = 0; i < TXREC_REPLIES; i++)
		r.smtp.replies[i] = 250;
	r.smtp.replies[TXREC_REPLIES - 1] = 450;
	r.smtp.flags = 0x7f;
	for (i = 0; i + 1 < sizeof(r.helo); i++)
		r.helo[i] = i % 3 ? '\x01' : '"';
	r.helo[i] = '\0';
	memset(r.ptr_name, '\\', sizeof(r.ptr_name) - 1);
	r.ptr_name[sizeof(r.ptr_name) - 1] = '\0';
	memset(r.mail_from, 0xff, sizeof(r.mail_from) - 1);
	r.mail_from[sizeof(r.mail_from) - 1] = '\0';
	memset(r.rcpt, 'r', sizeof(r.rcpt) - 1); /* safe, but too long */
	r.rcpt[sizeof(r.rcpt) - 1] = '\0';
	n = txlog_format(&r, line, sizeof(line));
	CHECK(n == strlen(line) && line[n - 1] == '\n' && strchr(line, '\n') == line + n - 1,
	      "one whole line: %s", line);
	CHECK(strstr(line, " reply=450 replies=") != NULL, "reply kept: %s", line);
	CHECK(strstr(line, " spf=fail dkim=none ipv6-auth=reject queue_id=6923AB3D7A1C20003 ") !=
		      NULL,
	      "verdicts kept: %s", line);
	CHECK(strstr(line, " flags=pregreet,delivered,") != NULL, "flags kept: %s", line);
	CHECK(strstr(line, " cut=ptr_name,helo,mail_from,rcpt\n") != NULL, "cuts named: %s", line);
	{
		static const char *const keys[] = { "ptr_name", "helo", "mail_from", "rcpt" };

		for (i = 0; i < 4; i++) {
			size_t len = strlen(value_of(line, keys[i], v, sizeof(v))), k;

			CHECK(len > 200 && len <= 256, "%s: %zu characters", keys[i], len);
			CHECK(len >= 5 && strcmp(v + len - 4, "...\"") == 0 && v[0] == '"',
			      "%s ends in a marked cut: %s", keys[i], v);
			/* every backslash starts a whole escape */
			for (k = 1; k + 4 < len; k++)
				if (v[k] == '\\') {
					CHECK(v[k + 1] == '"' || v[k + 1] == '\\' ||
						      (v[k + 1] == 'x' && k + 3 < len - 4),
					      "%s: a broken escape at %zu: %s", keys[i], k, v);
					k += v[k + 1] == 'x' ? 3 : 1;
				}
		}
	}
	/* A short value is never marked. */
	fill_rec(&r);
	snprintf(r.helo, sizeof(r.helo), "dots...");
	txlog_format(&r, line, sizeof(line));
	CHECK(strstr(line, " cut=") == NULL && strstr(line, " helo=dots... ") != NULL,
	      "not cut: %s", line);
}

/* A log file is created 0640 whatever the umask; an existing one keeps
 * its mode. */
static void
test_log_mode(void)
{
	static const mode_t masks[] = { 0, 022, 077 };
	char dir[] = "/tmp/se-logmode-XXXXXX", path[64];
	struct stat st;
	size_t i;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	snprintf(path, sizeof(path), "%s/edge.log", dir);
	for (i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		mode_t old = umask(masks[i]);

		unlink(path);
		f = txlog_open(path);
		umask(old);
		CHECK(f != NULL, "open: %s", strerror(errno));
		CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640, "umask %03o: mode %03o",
		      (unsigned)masks[i], (unsigned)(st.st_mode & 07777));
		fputs("x\n", f);
		fclose(f);
	}
	chmod(path, 0600);
	f = txlog_open(path);
	CHECK(f != NULL && stat(path, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 2,
	      "an existing log: mode %03o size %lld", (unsigned)(st.st_mode & 07777),
	      (long long)st.st_size);
	if (f)
		fclose(f);
	unlink(path);
	rmdir(dir);
}

static void
test_txlog(void)
{
	struct txrec r;
	char line[2048];
	size_t n;

	fill_rec(&r);
	n = txlog_format(&r, line, sizeof(line));
	CHECK(n == strlen(line) && line[n - 1] == '\n' && !strchr(line, '\r'), "one line");
	CHECK(strcmp(line,
		     "time=2026-11-28T21:16:15.123Z session=0001000000000007 event=transaction "
		     "peer=2001:db8:1::20 port=40000 reply=550 replies=220,250,550 ptr=none "
		     "ipv6-ptr=reject rcpts=1 size=0 flags=pregreet helo=client.example "
		     "mail_from=alice@example.org rcpt=bob@example.net\n") == 0,
	      "line: %s", line);

	/* The authentication checks, once done. */
	r.auth_checked = true;
	snprintf(r.spf, sizeof(r.spf), "fail");
	snprintf(r.dkim, sizeof(r.dkim), "pass");
	r.auth_outcome = POLICY_PASS;
	snprintf(r.queue_id, sizeof(r.queue_id), "6923AB3D7A1C20003");
	txlog_format(&r, line, sizeof(line));
	CHECK(strstr(line,
		     " ipv6-ptr=reject spf=fail dkim=pass ipv6-auth=pass queue_id=6923AB3D7A1C20003 rcpts=1") !=
		      NULL,
	      "auth fields: %s", line);
	r.auth_checked = false;
	r.queue_id[0] = '\0';

	/* The session's TLS, after STARTTLS. */
	snprintf(r.tls_version, sizeof(r.tls_version), "TLSv1.2");
	snprintf(r.tls_cipher, sizeof(r.tls_cipher), "ECDHE-ECDSA-AES256-GCM-SHA384");
	txlog_format(&r, line, sizeof(line));
	CHECK(strstr(line,
		     " ipv6-ptr=reject tls=TLSv1.2 cipher=ECDHE-ECDSA-AES256-GCM-SHA384 rcpts=1 ") !=
		      NULL,
	      "tls fields: %s", line);
	r.tls_version[0] = r.tls_cipher[0] = '\0';

	/* What the peer chose cannot break the line or forge a field. */
	snprintf(r.helo, sizeof(r.helo), "evil\r\nreply=250 \"x\\");
	r.mail_from[0] = '\0';
	txlog_format(&r, line, sizeof(line));
	CHECK(strstr(line, " helo=\"evil\\x0d\\x0areply=250 \\\"x\\\\\" ") != NULL, "escaped: %s",
	      line);
	CHECK(strstr(line, " mail_from=<> ") != NULL, "null sender: %s", line);
	CHECK(strchr(line, '\n') == line + strlen(line) - 1, "still one line");

	/* A record longer than the buffer is cut, still one line. */
	memset(r.helo, 'h', sizeof(r.helo) - 1);
	r.helo[sizeof(r.helo) - 1] = '\0';
	n = txlog_format(&r, line, 200);
	CHECK(n == 199 && line[198] == '\n', "cut line %zu", n);

	test_txlog_bounds();
}

static int
count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char *
read_only_file(const char *dir, size_t *len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024], *buf = NULL;
	FILE *f;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			f = fopen(path, "r");
			buf = malloc(1 << 22);
			*len = fread(buf, 1, 1 << 22, f);
			fclose(f);
			break;
		}
	if (d)
		closedir(d);
	return buf;
}

/* Two body chunks as the SMTP engine lays them in caller memory. */
static _Alignas(16) uint8_t chunk_mem[2][sizeof(struct chunk) + 16];

static struct spool *shared_spool;

/* What the control plane does: a queue id, our header, the write. */
static int
deliver(struct spool *s, struct txrec *r)
{
	char hdr[1024];
	size_t hlen;

	queue_id_new(r->queue_id);
	hlen = spool_received(r, "mx.lab.example", hdr, sizeof(hdr));
	return spool_write(s, hdr, hlen, r->body);
}

static void *
spool_writer(void *arg)
{
	struct txrec *r = arg;
	int i;

	for (i = 0; i < 25; i++)
		if (deliver(shared_spool, &r[i]) < 0)
			return (void *)1;
	return NULL;
}

static void
test_spool(void)
{
	char dir[] = "/tmp/smtpedge-spool-XXXXXX", sub[256], err[256];
	struct chunk *ca = (struct chunk *)chunk_mem[0];
	struct chunk *cb = (struct chunk *)chunk_mem[1];
	static struct txrec recs[4][25];
	struct spool *s;
	struct txrec r;
	size_t len, hlen;
	char *file, hdr[1024];
	pthread_t t[4];
	int i, j, ok = 1;

	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	snprintf(sub, sizeof(sub), "%s/maildir", dir);
	s = spool_open(sub, "mx.lab.example", NULL, err, sizeof(err));
	CHECK(s != NULL, "spool_open: %s", err);
	if (!s)
		return;
	ca->next = cb;
	ca->len = 10;
	memcpy(ca->data, "Subject: x", 10);
	cb->next = NULL;
	cb->len = 9;
	memcpy(cb->data, "\r\n\r\nhi\r\n", 9);
	ca->cap = cb->cap = 16;

	fill_rec(&r);
	r.ptr = PTR_PASS;
	snprintf(r.ptr_name, sizeof(r.ptr_name), "peer-ok.lab.example");
	snprintf(r.helo, sizeof(r.helo), "client\r\nX-Evil: 1");
	r.body = ca;
	CHECK(deliver(s, &r) == 0, "spool_write: %s", strerror(errno));
	CHECK(strlen(r.queue_id) == 17, "queue id \"%s\"", r.queue_id);
	snprintf(sub, sizeof(sub), "%s/maildir/new", dir);
	CHECK(count_dir(sub) == 1, "one file in new/");
	snprintf(sub, sizeof(sub), "%s/maildir/tmp", dir);
	CHECK(count_dir(sub) == 0, "tmp/ is empty after the rename");
	snprintf(sub, sizeof(sub), "%s/maildir/new", dir);
	file = read_only_file(sub, &len);
	hlen = spool_received(&r, "mx.lab.example", hdr, sizeof(hdr));
	CHECK(file && len == hlen + 19 && memcmp(file, hdr, hlen) == 0 &&
		      memcmp(file + hlen, "Subject: x\r\n\r\nhi\r\n", 19) == 0,
	      "the file is the Received: header and the exact body");
	CHECK(strstr(hdr,
		     "Received: from client??X-Evil:?1 (peer-ok.lab.example [IPv6:2001:db8:1::20])\r\n"
		     "\tby mx.lab.example (smtpedge) with ESMTP id ") == hdr,
	      "header: %s", hdr);
	CHECK(strstr(hdr,
		     "\r\n\tfor <bob@example.net>;\r\n\tSat, 28 Nov 2026 21:16:15 +0000\r\n") !=
		      NULL,
	      "header end: %s", hdr);
	/* A HELO that poses as the comment after it stays one word. */
	snprintf(r.helo, sizeof(r.helo), "x (bank.example [IPv6:2001:db8::1]);");
	spool_received(&r, "mx.lab.example", hdr, sizeof(hdr));
	CHECK(strncmp(hdr,
		      "Received: from x??bank.example?[IPv6:2001:db8::1]?? (peer-ok.lab.example [IPv6:",
		      79) == 0,
	      "HELO as one word: %s", hdr);
	free(file);
	/* After STARTTLS: ESMTPS (RFC 3848) and the cipher in a comment. */
	snprintf(r.tls_version, sizeof(r.tls_version), "TLSv1.3");
	snprintf(r.tls_cipher, sizeof(r.tls_cipher), "TLS_AES_256_GCM_SHA384");
	r.tls_bits = r.tls_alg_bits = 256;
	spool_received(&r, "mx.lab.example", hdr, sizeof(hdr));
	CHECK(strstr(hdr, "[IPv6:2001:db8:1::20])\r\n"
			  "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
			  "\tby mx.lab.example (smtpedge) with ESMTPS id ") != NULL,
	      "TLS header: %s", hdr);
	r.tls_version[0] = '\0';

	/* Four threads at once: every message lands, every id differs. */
	shared_spool = s;
	for (i = 0; i < 4; i++)
		for (j = 0; j < 25; j++) {
			recs[i][j] = r;
			recs[i][j].body = ca;
		}
	for (i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, spool_writer, recs[i]);
	for (i = 0; i < 4; i++) {
		void *rv;

		pthread_join(t[i], &rv);
		ok &= rv == NULL;
	}
	CHECK(ok, "a concurrent spool_write failed");
	CHECK(count_dir(sub) == 101, "%d files in new/, want 101", count_dir(sub));
	for (i = 0; i < 100; i++)
		for (j = i + 1; j < 100; j++)
			if (strcmp(recs[i / 25][i % 25].queue_id, recs[j / 25][j % 25].queue_id) ==
			    0)
				ok = 0;
	CHECK(ok, "two messages got one queue id");

	/* The spool's directory renamed and another put in its place: the
	 * messages still go to the directories opened at start. */
	{
		char moved[64], path[64];

		snprintf(path, sizeof(path), "%s/maildir", dir);
		snprintf(moved, sizeof(moved), "%s/maildir.moved", dir);
		CHECK(rename(path, moved) == 0, "rename: %s", strerror(errno));
		snprintf(sub, sizeof(sub), "mkdir -p %s/maildir/tmp %s/maildir/new", dir, dir);
		CHECK(system(sub) == 0, "mkdir");
		CHECK(deliver(s, &r) == 0, "spool_write after the swap: %s", strerror(errno));
		snprintf(sub, sizeof(sub), "%s/maildir/new", dir);
		CHECK(count_dir(sub) == 0, "a message went to the swapped-in directory");
		snprintf(sub, sizeof(sub), "%s/maildir/tmp", dir);
		CHECK(count_dir(sub) == 0, "a file was made in the swapped-in tmp/");
		snprintf(sub, sizeof(sub), "%s/maildir.moved/new", dir);
		CHECK(count_dir(sub) == 102, "%d files in the original new/, want 102",
		      count_dir(sub));
		snprintf(sub, sizeof(sub), "rm -rf %s/maildir && mv %s %s", dir, moved, path);
		CHECK(system(sub) == 0, "restore");
		snprintf(sub, sizeof(sub), "%s/maildir/new", dir);
	}

	/* A spool that cannot be written fails, and leaves nothing in new/. */
	snprintf(sub, sizeof(sub), "rm -rf %s/maildir/tmp", dir);
	CHECK(system(sub) == 0, "rm");
	CHECK(deliver(s, &r) < 0, "write to a missing tmp/ succeeded");
	snprintf(sub, sizeof(sub), "%s/maildir/new", dir);
	CHECK(count_dir(sub) == 102, "a failed write left a file in new/");
	spool_close(s);

	/* A spool that cannot be made says so. */
	snprintf(sub, sizeof(sub), "%s/file", dir);
	fclose(fopen(sub, "w"));
	snprintf(sub, sizeof(sub), "%s/file/maildir", dir);
	s = spool_open(sub, "mx", NULL, err, sizeof(err));
	CHECK(s == NULL && strstr(err, "cannot create") != NULL, "%s", err);
	snprintf(sub, sizeof(sub), "rm -rf %s", dir);
	CHECK(system(sub) == 0, "cleanup");
}

/* Group commit: what each submission was answered, and what the groups
 * were. */
struct answer {
	atomic_int calls;
	int err;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned answered;
	atomic_uint groups, msgs, fsyncs;
} gc = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void
answered(void *arg, int err)
{
	struct answer *a = arg;

	a->err = err;
	atomic_fetch_add(&a->calls, 1);
	pthread_mutex_lock(&gc.lock);
	gc.answered++;
	pthread_cond_broadcast(&gc.cond);
	pthread_mutex_unlock(&gc.lock);
}

static void
grouped(void *arg, unsigned msgs, unsigned fsyncs)
{
	(void)arg;
	atomic_fetch_add(&gc.groups, 1);
	atomic_fetch_add(&gc.msgs, msgs);
	atomic_fetch_add(&gc.fsyncs, fsyncs);
}

static void
gc_reset(void)
{
	gc.answered = 0;
	atomic_store(&gc.groups, 0);
	atomic_store(&gc.msgs, 0);
	atomic_store(&gc.fsyncs, 0);
}

static void
gc_wait(unsigned n)
{
	pthread_mutex_lock(&gc.lock);
	while (gc.answered < n)
		pthread_cond_wait(&gc.cond, &gc.lock);
	pthread_mutex_unlock(&gc.lock);
}

/* A spool in a fresh directory of dir (mkdtemp'd), for group tests. */
static struct spool *
group_spool(const char *dir, const char *name, struct spool_params *p)
{
	char path[256], err[256];
	struct spool *s;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	p->on_group = grouped;
	s = spool_open(path, "mx.lab.example", p, err, sizeof(err));
	CHECK(s != NULL, "spool_open: %s", err);
	return s;
}

static int
submit_seq(struct spool *s, unsigned seq, const struct chunk *body, struct answer *a)
{
	char hdr[32];
	int n = snprintf(hdr, sizeof(hdr), "X-Seq: %u\r\n", seq);

	return spool_submit(s, hdr, (size_t)n, body, answered, a);
}

/* new/ of dir/name holds exactly the messages whose answer was 0, each
 * whole: its X-Seq header and the body, and tmp/ is empty. */
static void
check_committed(const char *dir, const char *name, const struct answer *a, unsigned n,
		const struct chunk *body)
{
	char path[512], file[1024], want[16384];
	unsigned char *seen = calloc(n, 1);
	struct dirent *e;
	unsigned whole = 0, ok_answers = 0, i, seq;
	size_t blen = 0, len;
	const struct chunk *c;
	DIR *d;
	FILE *f;

	for (c = body; c; c = c->next) {
		memcpy(want + blen, c->data, c->len);
		blen += c->len;
	}
	snprintf(path, sizeof(path), "%s/%s/new", dir, name);
	d = opendir(path);
	while (d && (e = readdir(d))) {
		char *buf;

		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		buf = malloc(blen + 64);
		f = fopen(file, "r");
		len = f ? fread(buf, 1, blen + 64, f) : 0;
		if (f)
			fclose(f);
		if (sscanf(buf, "X-Seq: %u\r\n", &seq) == 1 && seq < n && !seen[seq] &&
		    a[seq].err == 0) {
			char hdr[32];
			int h = snprintf(hdr, sizeof(hdr), "X-Seq: %u\r\n", seq);

			if (len == (size_t)h + blen && memcmp(buf + h, want, blen) == 0) {
				seen[seq] = 1;
				whole++;
			}
		}
		free(buf);
	}
	if (d)
		closedir(d);
	for (i = 0; i < n; i++)
		ok_answers += a[i].err == 0;
	CHECK(whole == ok_answers, "%u whole files in new/, %u messages answered 0", whole,
	      ok_answers);
	snprintf(path, sizeof(path), "%s/%s/new", dir, name);
	CHECK(count_dir(path) == (int)ok_answers, "%d files in new/, want %u", count_dir(path),
	      ok_answers);
	snprintf(path, sizeof(path), "%s/%s/tmp", dir, name);
	CHECK(count_dir(path) == 0, "%d files left in tmp/", count_dir(path));
	free(seen);
}

static struct spool *submit_spool;
static struct answer submit_answers[256];
static const struct chunk *submit_body;

/* Thread t of 8 submits messages t, t+8, ... of 256. */
static void *
submitter(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg, i;

	for (i = t; i < 256; i += 8)
		if (submit_seq(submit_spool, i, submit_body, &submit_answers[i]) < 0)
			return (void *)1;
	return NULL;
}

static void
test_spool_groups(void)
{
	char dir[] = "/tmp/smtpedge-group-XXXXXX", cmd[128];
	struct chunk *ca = (struct chunk *)chunk_mem[0];
	struct chunk *cb = (struct chunk *)chunk_mem[1];
	static struct answer a[256];
	struct spool_params p;
	struct spool *s;
	pthread_t t[8];
	unsigned i, once = 1, zero = 1;
	int ok = 1;

	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	ca->next = cb;
	ca->len = 10;
	memcpy(ca->data, "Subject: g", 10);
	cb->next = NULL;
	cb->len = 9;
	memcpy(cb->data, "\r\n\r\nhi\r\n", 9);
	ca->cap = cb->cap = 16;

	/* Sixteen submitted together, a window long enough to gather them and
	 * a group of sixteen: one group, seventeen fsyncs (each file's and
	 * new/'s once), and only then the sixteen answers. */
	gc_reset();
	p = (struct spool_params){ .max_group = 16, .window_us = 10000000 };
	s = group_spool(dir, "one", &p);
	if (!s)
		return;
	for (i = 0; i < 16; i++)
		CHECK(submit_seq(s, i, ca, &a[i]) == 0, "submit %u: %s", i, strerror(errno));
	gc_wait(16);
	CHECK_EQ_INT(atomic_load(&gc.groups), 1);
	CHECK_EQ_INT(atomic_load(&gc.msgs), 16);
	CHECK_EQ_INT(atomic_load(&gc.fsyncs), 17);
	for (i = 0; i < 16; i++) {
		once &= atomic_load(&a[i].calls) == 1;
		zero &= a[i].err == 0;
	}
	CHECK(once && zero, "every submission answered once, with success");
	check_committed(dir, "one", a, 16, ca);
	spool_close(s);

	/* 256 from eight threads at once: fewer groups than messages (a group
	 * holds two or more but for the last), one fsync of new/ per group,
	 * each answered once, every file whole. */
	gc_reset();
	p = (struct spool_params){ .max_group = 16, .window_us = 10000000 };
	submit_spool = s = group_spool(dir, "many", &p);
	if (!s)
		return;
	submit_body = ca;
	for (i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, submitter, (void *)(uintptr_t)i);
	for (i = 0; i < 8; i++) {
		void *rv;

		pthread_join(t[i], &rv);
		ok &= rv == NULL;
	}
	CHECK(ok, "a concurrent submit failed");
	spool_close(s);
	CHECK_EQ_INT(gc.answered, 256);
	CHECK_EQ_INT(atomic_load(&gc.msgs), 256);
	CHECK(atomic_load(&gc.groups) <= 256 / 2 + 1, "%u groups for 256 messages",
	      atomic_load(&gc.groups));
	CHECK_EQ_INT(atomic_load(&gc.fsyncs), 256 + atomic_load(&gc.groups));
	for (i = 0, once = 1, zero = 1; i < 256; i++) {
		once &= atomic_load(&submit_answers[i].calls) == 1;
		zero &= submit_answers[i].err == 0;
	}
	CHECK(once && zero, "every concurrent submission answered once, with success");
	check_committed(dir, "many", submit_answers, 256, ca);

	/* Closing with submissions waiting for company: the window ends,
	 * they are committed, and each is answered before spool_close
	 * returns. */
	gc_reset();
	memset(a, 0, sizeof(a));
	p = (struct spool_params){ .max_group = 64, .window_us = 10000000 };
	s = group_spool(dir, "close", &p);
	if (!s)
		return;
	for (i = 0; i < 40; i++)
		CHECK(submit_seq(s, i, ca, &a[i]) == 0, "submit %u: %s", i, strerror(errno));
	spool_close(s);
	CHECK_EQ_INT(gc.answered, 40);
	for (i = 0, once = 1, zero = 1; i < 40; i++) {
		once &= atomic_load(&a[i].calls) == 1;
		zero &= a[i].err == 0;
	}
	CHECK(once && zero, "every pending submission answered once at close");
	check_committed(dir, "close", a, 40, ca);

	/* Bounded: past max_waiting a submit fails at once with EAGAIN and is
	 * never answered; those taken are. */
	gc_reset();
	memset(a, 0, sizeof(a));
	p = (struct spool_params){ .max_group = 16, .max_waiting = 4, .window_us = 10000000 };
	s = group_spool(dir, "bound", &p);
	if (!s)
		return;
	for (i = 0; i < 4; i++)
		CHECK(submit_seq(s, i, ca, &a[i]) == 0, "submit %u: %s", i, strerror(errno));
	errno = 0;
	CHECK(submit_seq(s, 4, ca, &a[4]) < 0 && errno == EAGAIN,
	      "the fifth submit: %s, want EAGAIN", strerror(errno));
	spool_close(s);
	CHECK_EQ_INT(gc.answered, 4);
	CHECK(atomic_load(&a[4].calls) == 0, "a refused submission was answered");
	check_committed(dir, "bound", a, 4, ca);

	/* One syncfs for the group's files instead of one fsync each. */
	gc_reset();
	memset(a, 0, sizeof(a));
	p = (struct spool_params){ .max_group = 8, .window_us = 10000000, .syncfs = true };
	s = group_spool(dir, "syncfs", &p);
	if (!s)
		return;
	for (i = 0; i < 8; i++)
		CHECK(submit_seq(s, i, ca, &a[i]) == 0, "submit %u: %s", i, strerror(errno));
	gc_wait(8);
	CHECK_EQ_INT(atomic_load(&gc.groups), 1);
	CHECK_EQ_INT(atomic_load(&gc.fsyncs), 2);
	spool_close(s);
	check_committed(dir, "syncfs", a, 8, ca);

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "cleanup");
}

/* A message the kernel refuses to write (past RLIMIT_FSIZE: EFBIG) gets
 * its error alone; the rest of its group commits. */
static void
test_spool_group_failure(void)
{
	char dir[] = "/tmp/smtpedge-gfail-XXXXXX", cmd[128];
	static _Alignas(16) uint8_t big_mem[sizeof(struct chunk) + 8192];
	struct chunk *ca = (struct chunk *)chunk_mem[0];
	struct chunk *big = (struct chunk *)big_mem;
	static struct answer a[9], b[9];
	struct spool_params p = { .max_group = 9, .window_us = 10000000 };
	struct rlimit old, lim;
	struct spool *s;
	unsigned i, good = 1;

	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	ca->next = NULL;
	ca->len = 10;
	memcpy(ca->data, "Subject: g", 10);
	big->next = NULL;
	big->len = big->cap = 8192;
	memset(big->data, 'x', 8192);
	gc_reset();
	s = group_spool(dir, "fail", &p);
	if (!s)
		return;
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 4096;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit: %s", strerror(errno));
	for (i = 0; i < 9; i++)
		CHECK(submit_seq(s, i, i == 4 ? big : ca, i == 4 ? &b[4] : &a[i]) == 0,
		      "submit %u: %s", i, strerror(errno));
	gc_wait(9);
	setrlimit(RLIMIT_FSIZE, &old);
	CHECK_EQ_INT(atomic_load(&gc.groups), 1);
	CHECK(b[4].err == EFBIG, "the big message: %s, want EFBIG", strerror(b[4].err));
	for (i = 0; i < 9; i++)
		if (i != 4)
			good &= a[i].err == 0 && atomic_load(&a[i].calls) == 1;
	CHECK(good, "the group's other messages committed");
	spool_close(s);
	a[4].err = EFBIG; /* its file must not be in new/ */
	check_committed(dir, "fail", a, 9, ca);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "cleanup");
}

/* --- the dispatcher and lent header blocks --- */

#define EARLY_DATA_CAP 300u /* chunk room: a block spans chunks */
#define EARLY_CHUNKS   63u

struct early {
	struct rte_ring *req, *ver;
	struct rte_mempool *chunks, *txrecs;
	struct ctlplane *pl;
	volatile sig_atomic_t stop;
	char msg[2048];
	uint32_t hdr_len, msg_len;
};

static void *
early_dispatch(void *arg)
{
	struct early *e = arg;

	ctlplane_run(e->pl, &e->stop);
	return NULL;
}

static uint64_t
early_counter(const char *name)
{
	struct ctl_stats t;
	unsigned i;

	ctl_stats_total(&t);
	for (i = 0; i < CTL__COUNT; i++)
		if (strcmp(ctl_counter_name(i), name) == 0)
			return t.c[i];
	CHECK(false, "no counter %s", name);
	return 0;
}

/* Waits until counter name reaches want (a few seconds at most). */
static bool
early_wait(const char *name, uint64_t want)
{
	unsigned i;

	for (i = 0; i < 500 && early_counter(name) < want; i++)
		usleep(10000);
	return early_counter(name) == want;
}

static uint64_t
wake_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
early_send(struct early *e, const struct ctl_msg *m)
{
	CHECK(rte_ring_enqueue_elem(e->req, (void *)(uintptr_t)m, sizeof(*m)) == 0, "request ring");
}

/* The message in chunks of the pool, as the worker leaves it: filled past
 * the header block, so the last chunk's len is beyond it. */
static struct chunk *
early_chain(struct early *e)
{
	struct chunk *head = NULL, **link = &head;
	uint32_t off = 0;

	while (off < e->msg_len) {
		void *obj;
		struct chunk *c;
		uint32_t n = e->msg_len - off < EARLY_DATA_CAP ? e->msg_len - off : EARLY_DATA_CAP;

		if (!CHECK(rte_mempool_get(e->chunks, &obj) == 0, "chunk pool"))
			break;
		c = obj;
		c->next = NULL;
		c->cap = EARLY_DATA_CAP;
		c->len = n;
		memcpy(c->data, e->msg + off, n);
		off += n;
		*link = c;
		link = &c->next;
	}
	return head;
}

static unsigned
early_chain_count(const struct chunk *c)
{
	unsigned n = 0;

	CHUNK_FOREACH(c, c)
	n++;
	return n;
}

static void
early_headers(struct early *e, uint32_t gen, uint32_t txn, struct chunk *body)
{
	struct ctl_msg m = { .kind = MSG_DKIM_HEADERS, .idx = 3, .gen = gen, .txn = txn };

	m.u.hdrs.body = body;
	m.u.hdrs.len = e->hdr_len;
	early_send(e, &m);
}

static void
early_final(struct early *e, uint32_t gen, uint32_t txn, uint32_t final)
{
	struct ctl_msg m = { .kind = MSG_BODY_FINAL, .idx = 3, .gen = gen, .txn = txn };

	m.u.hdrs.len = final;
	early_send(e, &m);
}

static void
early_return(struct early *e, uint32_t gen, uint32_t txn, struct chunk *body)
{
	struct ctl_msg m = { .kind = MSG_BODY_RETURN, .idx = 3, .gen = gen, .txn = txn };

	m.u.hdrs.body = body;
	early_send(e, &m);
}

static struct txrec *
early_rec(struct early *e, uint32_t txn)
{
	void *obj = NULL;
	struct txrec *r;

	CHECK(rte_mempool_get(e->txrecs, &obj) == 0, "txrec pool");
	r = obj;
	memset(r, 0, sizeof(*r));
	r->family = 6;
	memcpy(r->addr, peer6, 16);
	r->txn = txn;
	snprintf(r->helo, sizeof(r->helo), "client.ex.org");
	snprintf(r->mail_from, sizeof(r->mail_from), "a@ex.org");
	snprintf(r->rcpt, sizeof(r->rcpt), "b@example.net");
	return r;
}

/* Hands r on as MSG_SPOOL and waits for its answer; frees what the worker
 * would once answered. */
static bool
early_deliver(struct early *e, struct txrec *r, struct chunk *body)
{
	struct ctl_msg m = { .kind = MSG_SPOOL, .idx = 3, .gen = 1 };
	struct chunk *rcpts;
	unsigned waited;
	bool done = false;

	if (!CHECK(rte_mempool_get(e->chunks, (void **)&rcpts) == 0, "chunk for the recipients"))
		return false;
	rcpts->next = NULL;
	rcpts->cap = EARLY_DATA_CAP;
	rcpts->len = (uint32_t)sizeof("b@example.net");
	memcpy(rcpts->data, "b@example.net", rcpts->len);
	r->smtp.kind = TXREC_TRANSACTION;
	r->smtp.size = e->msg_len;
	r->body = body;
	r->rcpts = rcpts;
	r->auth_rule.action = POLICY_OFF;
	m.u.rec = r;
	early_send(e, &m);
	for (waited = 0; waited < 3000 && !done; waited++) {
		struct ctl_msg v;

		if (rte_ring_dequeue_elem(e->ver, &v, sizeof(v)) == 0 && v.kind == MSG_SPOOL_DONE)
			done = v.u.rec == r;
		else
			usleep(10000);
	}
	if (!done)
		return false;
	rte_mempool_put(e->chunks, rcpts);
	while (body) {
		struct chunk *next = body->next;

		rte_mempool_put(e->chunks, body);
		body = next;
	}
	return true;
}

/* A signed message's body hashed while it arrives, and let go of. Begins
 * with dkim_keys_early at `early` and dkim_keys_early_dropped at `dropped`. */
static void
hash_scenes(struct early *e, uint64_t early, uint64_t dropped)
{
	struct chunk *body = early_chain(e);
	unsigned n = early_chain_count(body), k;
	uint32_t want = (n - 1) * EARLY_DATA_CAP - e->hdr_len;
	uint64_t returned = early_counter("bodies_returned");
	uint64_t jobs = early_counter("dkim_hash_jobs"); /* the last delivery's */
	uint32_t part = 3 * EARLY_DATA_CAP - e->hdr_len; /* an aborted one's */
	struct txrec *r;
	char dkim[sizeof(r->dkim)];

	CHECK(n >= 5 && e->hdr_len < 3 * EARLY_DATA_CAP, "the body spans chunks: %u", n);
	early_headers(e, 1, 7, body);
	CHECK(early_wait("dkim_hash_jobs", jobs + 1), "a hashing job begun at the header end");
	/* as the worker fills the chain: each chunk before the tail, final */
	for (k = 1; k < n; k++)
		early_final(e, 1, 7, k * EARLY_DATA_CAP);
	early_final(e, 1, 6, n * EARLY_DATA_CAP); /* another transaction's: nothing */
	CHECK(early_wait("dkim_body_bytes_early", want),
	      "the body hashed before the end of DATA: %llu of %u bytes",
	      (unsigned long long)early_counter("dkim_body_bytes_early"), want);
	r = early_rec(e, 7);
	CHECK(early_deliver(e, r, body), "the hashed delivery answered");
	snprintf(dkim, sizeof(dkim), "%s", r->dkim);
	rte_mempool_put(e->txrecs, r);
	CHECK(early_counter("dkim_keys_early_used") == 2, "the delivery took the fetch and job");
	CHECK(early_counter("dkim_body_bytes_early") == want, "nothing hashed twice early");

	/* the same message verified whole (no job: no header block lent)
	 * comes to the same verdict */
	body = early_chain(e);
	r = early_rec(e, 8);
	CHECK(early_deliver(e, r, body), "the whole delivery answered");
	CHECK(dkim[0] != '\0' && strcmp(dkim, r->dkim) == 0, "the same DKIM verdict: %s, %s", dkim,
	      r->dkim);
	rte_mempool_put(e->txrecs, r);

	/* Aborted with its job part fed: the returned chain frees the job
	 * and the fetch once; a MSG_BODY_FINAL after it reads nothing (the
	 * chunks are back in the pool: the count of bytes hashed would
	 * grow). */
	body = early_chain(e);
	early_headers(e, 1, 9, body);
	CHECK(early_wait("dkim_hash_jobs", jobs + 2), "a second job");
	early_final(e, 1, 9, 3 * EARLY_DATA_CAP);
	CHECK(early_wait("dkim_body_bytes_early", want + part), "part of the second body hashed");
	early_return(e, 1, 9, body);
	CHECK(early_wait("bodies_returned", returned + n), "the returned chain freed");
	early_final(e, 1, 9, 4 * EARLY_DATA_CAP);
	CHECK(early_wait("dkim_keys_early_dropped", dropped + 1), "the fetch and job let go once");
	/* behind it on the ring: a new MAIL of the next transaction */
	body = early_chain(e);
	early_headers(e, 1, 10, body);
	CHECK(early_wait("dkim_hash_jobs", jobs + 3), "a third job");
	early_final(e, 1, 10, 3 * EARLY_DATA_CAP);
	/* hashed in the dispatcher's idle rounds: waited for, so that the
	 * MAIL below finds a job part fed */
	CHECK(early_wait("dkim_body_bytes_early", want + 2 * part),
	      "part of the third body hashed");
	{
		struct ctl_msg m = { .kind = MSG_SPF, .idx = 3, .gen = 1 };

		m.u.rec = early_rec(e, 11);
		early_send(e, &m);
	}
	CHECK(early_wait("dkim_keys_early_dropped", dropped + 2), "a new MAIL let go of the job");
	early_return(e, 1, 10, body);
	CHECK(early_wait("bodies_returned", returned + 2 * n), "the third chain freed");
	CHECK(early_wait("dkim_body_bytes_early", want + 2 * part),
	      "the jobs let go were fed no more: %llu",
	      (unsigned long long)early_counter("dkim_body_bytes_early"));
	CHECK(early_counter("dkim_keys_early") == early + 3, "three fetches");
}

static void
early_scenes(struct early *e)
{
	struct ctl_msg m = { .kind = MSG_RDNS, .family = 6, .idx = 3, .gen = 1 };
	struct chunk *body, *rcpts;
	struct txrec *r;
	unsigned n, waited;
	bool done = false;

	memcpy(m.u.addr, peer6, 16);
	early_send(e, &m); /* a session opens in slot 3, generation 1 */

	/* Aborted: the block's key is queried before any delivery; the body
	 * handed back lets go of the fetch and comes back to the pool. */
	body = early_chain(e);
	n = early_chain_count(body);
	CHECK(n >= 3, "the block spans chunks: %u", n);
	early_headers(e, 1, 1, body);
	CHECK(early_wait("dkim_keys_early", 1), "fetch begun at the header end");
	CHECK(early_counter("dkim_key_queries") == 1, "one key queried: %llu",
	      (unsigned long long)early_counter("dkim_key_queries"));
	early_return(e, 1, 1, body);
	CHECK(early_wait("bodies_returned", n), "the returned chain freed");
	CHECK(early_counter("dkim_keys_early_dropped") == 1, "the fetch let go");
	CHECK(rte_mempool_avail_count(e->chunks) == EARLY_CHUNKS, "chunks back: %u",
	      rte_mempool_avail_count(e->chunks));

	/* A new MAIL lets go of the last transaction's fetch; its body comes
	 * back later all the same. */
	body = early_chain(e);
	early_headers(e, 1, 2, body);
	CHECK(early_wait("dkim_keys_early", 2), "second fetch");
	m = (struct ctl_msg){ .kind = MSG_SPF, .idx = 3, .gen = 1 };
	m.u.rec = early_rec(e, 3);
	early_send(e, &m);
	CHECK(early_wait("dkim_keys_early_dropped", 2), "a new MAIL let go of the fetch");
	early_return(e, 1, 2, body);
	CHECK(early_wait("bodies_returned", 2 * n), "the second chain freed");
	CHECK(early_counter("dkim_keys_early_dropped") == 2, "dropped once only");

	/* A header block of a session gone (an older generation): no fetch,
	 * and the body still comes back. */
	body = early_chain(e);
	early_headers(e, 0, 3, body);
	early_return(e, 0, 3, body);
	CHECK(early_wait("bodies_returned", 3 * n), "the stale session's chain freed");
	CHECK(early_counter("dkim_keys_early") == 2, "no fetch for a stale session");

	/* The delivery takes its transaction's fetch, in flight or answered,
	 * and queries nothing again. */
	body = early_chain(e);
	early_headers(e, 1, 4, body);
	CHECK(early_wait("dkim_keys_early", 3), "third fetch");
	CHECK(rte_mempool_get(e->chunks, (void **)&rcpts) == 0, "chunk for the recipients");
	rcpts->next = NULL;
	rcpts->cap = EARLY_DATA_CAP;
	rcpts->len = (uint32_t)sizeof("b@example.net");
	memcpy(rcpts->data, "b@example.net", rcpts->len);
	r = early_rec(e, 4);
	r->smtp.kind = TXREC_TRANSACTION;
	r->smtp.size = e->msg_len;
	r->body = body;
	r->rcpts = rcpts;
	r->auth_rule.action = POLICY_OFF;
	m = (struct ctl_msg){ .kind = MSG_SPOOL, .idx = 3, .gen = 1 };
	m.u.rec = r;
	early_send(e, &m);
	for (waited = 0; waited < 3000 && !done; waited++) {
		struct ctl_msg v;

		if (rte_ring_dequeue_elem(e->ver, &v, sizeof(v)) == 0 && v.kind == MSG_SPOOL_DONE)
			done = v.u.rec == r;
		else
			usleep(10000);
	}
	CHECK(done, "the delivery answered");
	CHECK(early_counter("dkim_keys_early_used") == 1, "the delivery took the early fetch");
	CHECK(early_counter("dkim_key_queries") == 3, "no key fetched again: %llu",
	      (unsigned long long)early_counter("dkim_key_queries"));
	if (done) { /* the worker's to free once answered */
		rte_mempool_put(e->chunks, rcpts);
		while (body) {
			struct chunk *next = body->next;

			rte_mempool_put(e->chunks, body);
			body = next;
		}
		rte_mempool_put(e->txrecs, r);
	}

	hash_scenes(e, 3, 2);

	/* A fetch left in its slot at the end is freed with the plane (a
	 * leak under ASan otherwise), and its hashing job with it. */
	body = early_chain(e);
	early_headers(e, 1, 12, body);
	CHECK(early_wait("dkim_keys_early", 7), "seventh fetch");
	early_final(e, 1, 12, 4 * EARLY_DATA_CAP);
	early_return(e, 1, 13, body); /* another transaction's: the fetch stays */
	CHECK(early_wait("bodies_returned", 6 * n), "the last chain freed");
	CHECK(early_counter("dkim_keys_early_dropped") == 4, "another transaction's return");
}

static void
test_dkim_early(void)
{
	static struct edge_config cfg;
	static struct early e;
	char dir[] = "/tmp/test_control_early.XXXXXX", conf[256];
	struct ctlplane_params cp = { 0 };
	char err[256];
	pthread_t t;
	FILE *f;
	size_t k = 0;
	unsigned i;

	if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp"))
		return;
	snprintf(conf, sizeof(conf), "%s/edge.conf", dir);
	f = fopen(conf, "w");
	fprintf(f,
		"[edge]\nhostname = mx.ex.net\naddress6 = 2001:db8:1::1\n"
		"[dns]\nserver = 127.0.0.1@9\ntimeout_ms = 100\n"
		"[domains]\naccept = example.net\n[relay]\nspool = %s/spool\n"
		"[dataplane]\nflows = 64\n[log]\nfile = %s/log\n",
		dir, dir);
	fclose(f);
	if (!CHECK(config_load(conf, &cfg, stderr) == 0, "config"))
		return;
	e.req = rte_ring_create_elem("tc_req", sizeof(struct ctl_msg), 1024, SOCKET_ID_ANY,
				     RING_F_SP_ENQ | RING_F_SC_DEQ);
	e.ver = rte_ring_create_elem("tc_ver", sizeof(struct ctl_msg), 1024, SOCKET_ID_ANY,
				     RING_F_MP_HTS_ENQ | RING_F_SC_DEQ);
	/* as the worker's body budget: one getter, puts from both threads */
	e.chunks = rte_mempool_create(
		"tc_chunks", EARLY_CHUNKS, sizeof(struct chunk) + EARLY_DATA_CAP, 0, 0, NULL, NULL,
		NULL, NULL, SOCKET_ID_ANY, RTE_MEMPOOL_F_SC_GET);
	e.txrecs = rte_mempool_create("tc_txrecs", 15, sizeof(struct txrec), 0, 0, NULL, NULL, NULL,
				      NULL, SOCKET_ID_ANY, 0);
	if (!CHECK(e.req && e.ver && e.chunks && e.txrecs, "rings and pools"))
		return;
	policy_live_init(&cfg.policy);
	cp.cfg = &cfg;
	cp.n_workers = 1;
	cp.req = &e.req;
	cp.ver = &e.ver;
	cp.txrec_pool = e.txrecs;
	cp.max_flows = 8;
	e.pl = ctlplane_create(&cp, err, sizeof(err));
	if (!CHECK(e.pl != NULL, "ctlplane_create: %s", err))
		return;
	/* A signed header block longer than a chunk, then a body whose own
	 * signature-like line must not count. */
	k += (size_t)snprintf(e.msg + k, sizeof(e.msg) - k,
			      "From: a@ex.org\r\nDKIM-Signature: v=1; a=rsa-sha256; h=from; "
			      "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=dGVzdA==; "
			      "d=ex.org; s=early\r\n");
	for (i = 0; k < 2 * EARLY_DATA_CAP + 40; i++)
		k += (size_t)snprintf(e.msg + k, sizeof(e.msg) - k,
				      "X-Pad-%u: a field to make the block long\r\n", i);
	k += (size_t)snprintf(e.msg + k, sizeof(e.msg) - k, "\r\n");
	e.hdr_len = (uint32_t)k;
	k += (size_t)snprintf(e.msg + k, sizeof(e.msg) - k,
			      "DKIM-Signature: v=1; a=rsa-sha256; h=from; b=dGVzdA==; "
			      "bh=dGVzdA==; d=ex.org; s=body\r\nthe body\r\n");
	for (i = 0; k < 5 * EARLY_DATA_CAP + 40; i++)
		k += (size_t)snprintf(e.msg + k, sizeof(e.msg) - k,
				      "line %u of a body that spans chunks\r\n", i);
	e.msg_len = (uint32_t)k;
	pthread_create(&t, NULL, early_dispatch, &e);
	early_scenes(&e);
	e.stop = 1;
	pthread_join(t, NULL);
	ctlplane_destroy(e.pl);
	CHECK(rte_mempool_avail_count(e.chunks) == EARLY_CHUNKS, "every chunk back: %u",
	      rte_mempool_avail_count(e.chunks));
	rte_mempool_free(e.chunks);
	rte_mempool_free(e.txrecs);
	rte_ring_free(e.req);
	rte_ring_free(e.ver);
}

/* --- the work threads: asleep while idle, woken by each job --- */

#define WAKE_WORKERS 3  /* rings at most, each fed by its own thread */
#define WAKE_BURST   48 /* deliveries per ring per round, at most */
#define WAKE_ROUNDS  1000
#define WAKE_RING    128 /* a burst and more (a power of two) */
#define WAKE_IDLE_MS 200

struct wake_worker {
	struct rte_ring *req, *ver;
	struct rte_mempool *txrecs;
	unsigned id, burst;
	unsigned sent, answered, extra; /* this worker's deliveries, answers */
	char failed[160];               /* the first thing that went wrong */
};

/* The chunk every delivery carries: unsigned, so no key is fetched. */
static _Alignas(struct chunk) uint8_t wake_body_mem[sizeof(struct chunk) + 64];
#define wake_body ((struct chunk *)wake_body_mem)

/* A delivery the auth rule rejects on the work thread: SPF "none" at once
 * (a single-label domain), no signature. */
static struct txrec *
wake_rec(struct wake_worker *w, uint32_t txn)
{
	void *obj = NULL;
	struct txrec *r;

	if (rte_mempool_get(w->txrecs, &obj) != 0)
		return NULL;
	r = obj;
	memset(r, 0, sizeof(*r));
	r->family = 6;
	memcpy(r->addr, peer6, 16);
	r->txn = txn;
	snprintf(r->helo, sizeof(r->helo), "client");
	snprintf(r->mail_from, sizeof(r->mail_from), "a@localhost");
	snprintf(r->rcpt, sizeof(r->rcpt), "b@example.net");
	r->smtp.kind = TXREC_TRANSACTION;
	r->smtp.size = wake_body->len;
	r->body = wake_body;
	r->rcpts = wake_body;
	r->auth_rule.action = POLICY_ENFORCE;
	r->auth_rule.reply = 550;
	return r;
}

/* One worker: rounds of 1 to w->burst deliveries, each round waited for
 * (5 s at most) before the next, so the work threads go back to sleep in
 * between and every round must wake them. The sizes vary so that the
 * threads' ends of work and the dispatcher's queueing fall at every
 * moment of each other's. */
static void *
wake_feeder(void *arg)
{
	struct wake_worker *w = arg;
	unsigned round, k, n, got, seed = w->id + 1;

	for (round = 0; round < WAKE_ROUNDS && !w->failed[0]; round++) {
		struct txrec *sent[WAKE_BURST];
		uint64_t deadline;

		memset(sent, 0, sizeof(sent));
		n = 1 + (unsigned)rand_r(&seed) % w->burst;
		for (k = 0; k < n; k++) {
			struct ctl_msg m = { .kind = MSG_SPOOL, .idx = k, .gen = 1 };

			sent[k] = wake_rec(w, round * w->burst + k + 1);
			w->sent++;
			m.u.rec = sent[k];
			if (!sent[k] || rte_ring_enqueue_elem(w->req, &m, sizeof(m)) != 0) {
				snprintf(w->failed, sizeof(w->failed), "round %u: cannot send",
					 round);
				return NULL;
			}
		}
		deadline = wake_now_ms() + 5000;
		for (got = 0; got < n && !w->failed[0];) {
			struct ctl_msg v;

			if (rte_ring_dequeue_elem(w->ver, &v, sizeof(v)) != 0) {
				if (wake_now_ms() > deadline)
					snprintf(w->failed, sizeof(w->failed),
						 "round %u: %u of %u answered in 5 s", round, got,
						 n);
				sched_yield();
				continue;
			}
			for (k = 0; k < n && sent[k] != v.u.rec; k++)
				;
			if (v.kind != MSG_SPOOL_DONE || k == n) {
				w->extra++;
				continue;
			}
			if (v.u.rec->reply_code != 550)
				snprintf(w->failed, sizeof(w->failed), "round %u: reply %u", round,
					 v.u.rec->reply_code);
			rte_mempool_put(w->txrecs, sent[k]);
			sent[k] = NULL;
			got++;
			w->answered++;
		}
	}
	return NULL;
}

/* A plane of `threads` work threads fed by `workers` rings at once,
 * `burst` deliveries each per round. One thread fed one job at a time has
 * nobody to cover for it: a wake-up lost there hangs its round. */
static void
test_work_wake(unsigned threads, unsigned workers, unsigned burst)
{
	static struct edge_config cfg;
	static struct wake_worker ww[WAKE_WORKERS];
	static const char body[] = "From: a@localhost\r\nSubject: w\r\n\r\nbody\r\n";
	char dir[] = "/tmp/test_control_wake.XXXXXX", conf[256], name[32];
	struct rte_ring *req[WAKE_WORKERS], *ver[WAKE_WORKERS];
	struct ctlplane_params cp = { 0 };
	struct rte_mempool *txrecs;
	struct early e = { 0 }; /* for its dispatcher thread */
	pthread_t disp, feeders[WAKE_WORKERS];
	uint64_t w0, w1, rejects;
	unsigned i, sent = 0, answered = 0, extra = 0;
	char err[256];
	FILE *f;

	if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp"))
		return;
	snprintf(conf, sizeof(conf), "%s/edge.conf", dir);
	f = fopen(conf, "w");
	fprintf(f,
		"[edge]\nhostname = mx.ex.net\naddress6 = 2001:db8:1::1\n"
		"[dns]\nserver = 127.0.0.1@9\ntimeout_ms = 100\n"
		"[domains]\naccept = example.net\n[relay]\nspool = %s/spool\n"
		"[dataplane]\nflows = 64\n[log]\nfile = %s/log\n[control]\nthreads = %u\n",
		dir, dir, threads);
	fclose(f);
	if (!CHECK(config_load(conf, &cfg, stderr) == 0, "config"))
		return;
	wake_body->next = NULL;
	wake_body->cap = (uint32_t)(sizeof(wake_body_mem) - sizeof(struct chunk));
	wake_body->len = (uint32_t)strlen(body);
	memcpy(wake_body->data, body, wake_body->len);
	txrecs = rte_mempool_create("tw_txrecs", 2 * workers * burst, sizeof(struct txrec), 0, 0,
				    NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
	for (i = 0; i < workers; i++) {
		snprintf(name, sizeof(name), "tw_req%u", i);
		req[i] = rte_ring_create_elem(name, sizeof(struct ctl_msg), WAKE_RING,
					      SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "tw_ver%u", i);
		ver[i] = rte_ring_create_elem(name, sizeof(struct ctl_msg), WAKE_RING,
					      SOCKET_ID_ANY, RING_F_MP_HTS_ENQ | RING_F_SC_DEQ);
		if (!CHECK(req[i] && ver[i], "rings %u", i))
			return;
		ww[i] = (struct wake_worker){
			.req = req[i], .ver = ver[i], .txrecs = txrecs, .id = i, .burst = burst
		};
	}
	if (!CHECK(txrecs != NULL, "txrec pool"))
		return;
	policy_live_init(&cfg.policy);
	cp.cfg = &cfg;
	cp.n_workers = workers;
	cp.req = req;
	cp.ver = ver;
	cp.txrec_pool = txrecs;
	cp.max_flows = burst;
	e.pl = ctlplane_create(&cp, err, sizeof(err));
	if (!CHECK(e.pl != NULL, "ctlplane_create: %s", err))
		return;
	pthread_create(&disp, NULL, early_dispatch, &e);

	/* idle: the threads went to sleep once, and stay asleep */
	usleep(50000);
	w0 = early_counter("work_wakeups");
	usleep(WAKE_IDLE_MS * 1000);
	w1 = early_counter("work_wakeups");
	CHECK(w1 - w0 <= threads, "%u idle work threads woke %llu times in %u ms", threads,
	      (unsigned long long)(w1 - w0), WAKE_IDLE_MS);

	/* bursts from several rings: every delivery answered, once */
	rejects = early_counter("auth_reject");
	for (i = 0; i < workers; i++)
		pthread_create(&feeders[i], NULL, wake_feeder, &ww[i]);
	for (i = 0; i < workers; i++) {
		pthread_join(feeders[i], NULL);
		CHECK(!ww[i].failed[0], "worker %u: %s", i, ww[i].failed);
		sent += ww[i].sent;
		answered += ww[i].answered;
	}
	usleep(50000); /* an answer sent twice would be on a ring by now */
	for (i = 0; i < workers; i++) {
		struct ctl_msg v;

		while (rte_ring_dequeue_elem(ver[i], &v, sizeof(v)) == 0)
			extra++;
		extra += ww[i].extra;
	}
	CHECK(answered == sent && sent >= workers * WAKE_ROUNDS, "%u of %u deliveries answered",
	      answered, sent);
	CHECK(extra == 0, "%u answers more than once or unasked", extra);
	CHECK(early_counter("auth_reject") - rejects == answered,
	      "each rejected on a work thread once: %llu",
	      (unsigned long long)(early_counter("auth_reject") - rejects));
	CHECK(early_counter("work_wakeups") > w1, "the jobs woke the threads");

	/* and asleep again once the bursts are over */
	usleep(50000);
	w0 = early_counter("work_wakeups");
	usleep(WAKE_IDLE_MS * 1000);
	w1 = early_counter("work_wakeups");
	CHECK(w1 - w0 <= threads, "after the bursts: %llu wakeups idle",
	      (unsigned long long)(w1 - w0));

	e.stop = 1;
	pthread_join(disp, NULL);
	ctlplane_destroy(e.pl); /* wakes the sleepers to stop: a hang otherwise */
	for (i = 0; i < workers; i++) {
		rte_ring_free(req[i]);
		rte_ring_free(ver[i]);
	}
	rte_mempool_free(txrecs);
	snprintf(conf, sizeof(conf), "rm -rf %s", dir);
	CHECK(system(conf) == 0, "cleanup");
}

int
main(void)
{
	char prefix[64];
	char *eal[] = { "test_control", "-l",          "0",        "--no-huge",
			"-m",           "128",         "--no-pci", "--file-prefix",
			prefix,         "--log-level", "*:error" };

	inet_pton(AF_INET6, "2001:db8:1::20", peer6);
	inet_pton(AF_INET, "198.51.100.20", peer4);
	test_ptr_rule();
	test_ptr_addr_forms();
	test_settings();
	test_auth_rule();
	test_txlog();
	test_log_mode();
	test_spool();
	test_spool_groups();
	test_spool_group_failure();
	snprintf(prefix, sizeof(prefix), "test_control_%d", (int)getpid());
	if (CHECK(rte_eal_init((int)(sizeof(eal) / sizeof(eal[0])), eal) >= 0, "EAL")) {
		test_dkim_early();
		test_work_wake(4, WAKE_WORKERS, 4);
		test_work_wake(1, 1, 1);
		test_work_wake(1, 1, WAKE_BURST);
		test_work_wake(1, WAKE_WORKERS, WAKE_BURST);
		rte_eal_cleanup();
	}
	return check_done();
}
