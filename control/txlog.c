/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/txlog.c — formats transaction records as key=value lines.
 *
 * Values the peer chose (HELO, MAIL FROM, recipients) are written bare when
 * they hold only safe characters and quoted otherwise, with '"', '\' and
 * anything outside printable ASCII escaped, so a line can always be split
 * back into its fields and a peer cannot forge one.
 *
 * A line always holds its verdicts: they come first (the reply, the rules'
 * outcomes, the checks, the queue id), and the values from the peer or its
 * DNS (the PTR name, HELO, MAIL FROM, the first recipient) come last, each
 * written in at most VALUE_MAX characters. A longer one is cut before an
 * escape, never inside one, ends in "..." within its quotes, and is named in
 * a last field, cut=helo,mail_from, so a literal "..." is not mistaken for
 * a cut. Four such values and the fixed fields fit TXLOG_LINE_MAX.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/rules.h"
#include "common/txrec.h"

#include "control/txlog.h"

#define VALUE_MAX 256 /* a value as written: quotes and escapes included */

struct out {
	char *p;
	size_t n, off;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (o->off >= o->n)
		return;
	va_start(ap, fmt);
	w = vsnprintf(o->p + o->off, o->n - o->off, fmt, ap);
	va_end(ap);
	if (w > 0)
		o->off += (size_t)w;
	if (o->off >= o->n)
		o->off = o->n - 1;
}

static bool
safe(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == '"' ||
		    *s == '\\' || *s == '=')
			return false;
	return true;
}

/* Writes key=value, in at most VALUE_MAX characters after the '='. False
 * when the value had to be cut. */
static bool
put_value(struct out *o, const char *key, const char *v)
{
	char esc[8];
	size_t used = 2; /* the quotes */
	int w;

	put(o, " %s=", key);
	if (safe(v) && strlen(v) <= VALUE_MAX) {
		put(o, "%s", v);
		return true;
	}
	put(o, "\"");
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '"' || c == '\\')
			w = snprintf(esc, sizeof(esc), "\\%c", c);
		else if (c < ' ' || c >= 0x7f)
			w = snprintf(esc, sizeof(esc), "\\x%02x", c);
		else
			w = snprintf(esc, sizeof(esc), "%c", c);
		/* room for this one, and for "..." unless it is the last */
		if (used + (size_t)w + (v[1] ? 3 : 0) > VALUE_MAX) {
			put(o, "...\"");
			return false;
		}
		put(o, "%s", esc);
		used += (size_t)w;
	}
	put(o, "\"");
	return true;
}

FILE *
txlog_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	FILE *f;
	int saved;

	if (fd >= 0) {
		if (fchmod(fd, 0640) < 0)
			goto fail;
	} else if (errno == EEXIST) {
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (fd < 0)
			return NULL;
	} else {
		return NULL;
	}
	f = fdopen(fd, "a");
	if (f)
		return f;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return NULL;
}

static const char *const flag_names[] = {
	"pregreet", "delivered", "aborted",   "bare_newline",
	"too_big",  "no_memory", "long_line", "late_write",
};

size_t
txlog_format(const struct txrec *r, char *out, size_t n)
{
	struct out o = { out, n, 0 };
	char addr[INET6_ADDRSTRLEN], ts[32];
	time_t t = (time_t)(r->time_us / 1000000);
	struct tm tm;
	uint32_t i;
	bool first = true;
	const char *cut[4];
	unsigned ncut = 0;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	inet_ntop(r->family == 6 ? AF_INET6 : AF_INET, r->addr, addr, sizeof(addr));
	put(&o, "time=%s.%03uZ session=%016llx event=%s peer=%s port=%u", ts,
	    (unsigned)(r->time_us / 1000 % 1000), (unsigned long long)r->session_id,
	    r->smtp.kind == TXREC_SESSION ? "session" : "transaction", addr, r->port);
	if (r->smtp.nreplies)
		put(&o, " reply=%u replies=", r->smtp.replies[r->smtp.nreplies - 1]);
	for (i = 0; i < r->smtp.nreplies && i < TXREC_REPLIES; i++)
		put(&o, "%s%u", i ? "," : "", r->smtp.replies[i]);
	put(&o, " ptr=%s", ptr_result_name(r->ptr));
	put(&o, " %s=%s", policy_rule_name(r->family == 6 ? POLICY_IPV6_PTR : POLICY_IPV4_PTR),
	    policy_outcome_name(r->ptr_outcome));
	if (r->auth_checked)
		put(&o, " spf=%s dkim=%s %s=%s", r->spf, r->dkim,
		    policy_rule_name(r->family == 6 ? POLICY_IPV6_AUTH : POLICY_IPV4_AUTH),
		    policy_outcome_name(r->auth_outcome));
	if (r->tls_version[0])
		put(&o, " tls=%s cipher=%s", r->tls_version, r->tls_cipher);
	if (r->queue_id[0])
		put(&o, " queue_id=%s", r->queue_id);
	if (r->smtp.kind == TXREC_TRANSACTION)
		put(&o, " rcpts=%u size=%llu", r->smtp.nrcpts, (unsigned long long)r->smtp.size);
	for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
		if (r->smtp.flags & (1u << i)) {
			put(&o, "%s%s", first ? " flags=" : ",", flag_names[i]);
			first = false;
		}
	if (r->ptr_name[0] && !put_value(&o, "ptr_name", r->ptr_name))
		cut[ncut++] = "ptr_name";
	if (r->helo[0] && !put_value(&o, "helo", r->helo))
		cut[ncut++] = "helo";
	if (r->smtp.kind == TXREC_TRANSACTION) {
		if (!put_value(&o, "mail_from", r->mail_from[0] ? r->mail_from : "<>"))
			cut[ncut++] = "mail_from";
		if (r->rcpt[0] && !put_value(&o, "rcpt", r->rcpt))
			cut[ncut++] = "rcpt";
	}
	for (i = 0; i < ncut; i++)
		put(&o, "%s%s", i ? "," : " cut=", cut[i]);
	put(&o, "\n");
	if (o.p[o.off - 1] != '\n') { /* cut short: still one line */
		o.p[o.off - 1] = '\n';
	}
	return o.off;
}
