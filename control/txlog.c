/*
 * txlog.c - formats transaction records as key=value lines.
 *
 * Values the peer chose (HELO, MAIL FROM, recipients) are written bare when
 * they hold only safe characters and quoted otherwise, with '"', '\' and
 * anything outside printable ASCII escaped, so a line can always be split
 * back into its fields and a peer cannot forge one.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "control/policy.h"
#include "control/txlog.h"
#include "control/txrec.h"

struct out {
	char *p;
	size_t n, off;
};

static void
put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f ||
		    *s == '"' || *s == '\\' || *s == '=')
			return false;
	return true;
}

static void
put_value(struct out *o, const char *key, const char *v)
{
	put(o, " %s=", key);
	if (safe(v)) {
		put(o, "%s", v);
		return;
	}
	put(o, "\"");
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '"' || c == '\\')
			put(o, "\\%c", c);
		else if (c < ' ' || c >= 0x7f)
			put(o, "\\x%02x", c);
		else
			put(o, "%c", c);
	}
	put(o, "\"");
}

static const char *const flag_names[] = {
	"pregreet", "delivered", "aborted", "bare_newline", "too_big",
	"no_memory", "long_line",
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

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	inet_ntop(r->family == 6 ? AF_INET6 : AF_INET, r->addr, addr, sizeof(addr));
	put(&o, "time=%s.%03uZ session=%016llx event=%s peer=%s port=%u", ts,
	    (unsigned)(r->time_us / 1000 % 1000), (unsigned long long)r->session_id,
	    r->kind == TXREC_SESSION ? "session" : "transaction", addr, r->port);
	put(&o, " ptr=%s", ptr_result_name(r->ptr));
	if (r->ptr_name[0])
		put_value(&o, "ptr_name", r->ptr_name);
	put(&o, " %s=%s", policy_rule_name(r->family == 6 ? POLICY_IPV6_PTR : POLICY_IPV4_PTR),
	    policy_outcome_name(r->ptr_outcome));
	if (r->helo[0])
		put_value(&o, "helo", r->helo);
	if (r->kind == TXREC_TRANSACTION) {
		put_value(&o, "mail_from", r->mail_from[0] ? r->mail_from : "<>");
		put(&o, " rcpts=%u", r->nrcpts);
		if (r->rcpt[0])
			put_value(&o, "rcpt", r->rcpt);
		put(&o, " size=%llu", (unsigned long long)r->size);
	}
	if (r->auth_checked)
		put(&o, " spf=%s dkim=%s %s=%s", r->spf, r->dkim,
		    policy_rule_name(r->family == 6 ? POLICY_IPV6_AUTH : POLICY_IPV4_AUTH),
		    policy_outcome_name(r->auth_outcome));
	if (r->queue_id[0])
		put(&o, " queue_id=%s", r->queue_id);
	if (r->nreplies)
		put(&o, " reply=%u replies=", r->replies[r->nreplies - 1]);
	for (i = 0; i < r->nreplies && i < TXREC_REPLIES; i++)
		put(&o, "%s%u", i ? "," : "", r->replies[i]);
	for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
		if (r->flags & (1u << i)) {
			put(&o, "%s%s", first ? " flags=" : ",", flag_names[i]);
			first = false;
		}
	put(&o, "\n");
	if (o.p[o.off - 1] != '\n') {   /* cut short: still one line */
		o.p[o.off - 1] = '\n';
	}
	return o.off;
}
