/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/relay.c — SMTP/LMTP delivery to the downstream MTA (see relay.h).
 *
 * The promise is the spool's: the sender hears 250 only once the next hop
 * has answered 250 to the final dot, and anything short of that is a 4xx,
 * so the sender keeps the message and retries.
 *
 * One thread of its own runs an epoll loop over non-blocking sockets; no
 * call on it blocks (the target's name is resolved once, at create). Each
 * connection is a state machine: connect, greeting, EHLO, then for each
 * message RSET (when reused), XCLIENT, the envelope, DATA, the body, the
 * final reply. Messages wait in a FIFO for a connection; up to
 * `connections` are open at once, each carrying one message, so that many
 * messages are in flight. Every wait has a deadline: the connect and each
 * reply timeout_ms (final_timeout_ms for the dot), each wait for room to
 * write timeout_ms, a message waiting for a connection timeout_ms; and
 * every reply is bounded in lines and bytes, so a downstream that stalls or
 * babbles costs its messages one timeout, never more.
 *
 * Connections: those idle are kept (at most pool_size) and reused. A kept
 * connection may have been closed by the downstream while idle (Postfix
 * drops idle clients after smtpd_timeout): any input or hangup while idle
 * closes it at once, one idle longer than idle_max_ms is not reused, and if
 * a reused one still fails at its RSET (or XCLIENT), before any part of the
 * message was sent, the message goes once more over a fresh connection.
 * Any other error closes the connection: after a refusal or a timeout its
 * state is not worth the doubt.
 *
 * XCLIENT (Postfix's extension) carries the real client's address, name and
 * HELO to the downstream, so its own checks and logs see the sender and not
 * the edge; it is sent only when the EHLO reply offers it, with only the
 * attributes offered, and followed by a new EHLO as the extension requires.
 * Whether and what to send is decided once per connection, by the first
 * EHLO: the EHLO after XCLIENT is answered to the client we stand for, and
 * a downstream may offer that one less (or more); were it to decide, the
 * next message on the kept connection could go on as the previous
 * message's client. The name is the forward-confirmed one only: Postfix
 * takes NAME as verified, so anything else is [UNAVAILABLE], or
 * [TEMPUNAVAIL] when the lookup failed or has not answered.
 *
 * The answer to the sender for several recipients (one reply per RCPT, and
 * in LMTP one per recipient after the dot) follows one rule, worst wins:
 *  - any 5xx: the first 5xx is passed on. A permanent refusal cannot turn
 *    into success on a retry, so answering 451 would only have the sender
 *    retry for days, handing the accepted recipients a new copy each time;
 *    and 250 would lose the refused recipients without anyone being told.
 *    The accepted recipients do get the message (in LMTP they already have
 *    it at that point), and the reply text says so ("delivered to 2 of 3
 *    recipients"), so the bounce the sender receives tells the whole truth.
 *  - else any 4xx: 451. At RCPT time the transaction is abandoned before
 *    the message is sent, so the retry duplicates nothing. In LMTP, after
 *    the dot, the recipients that answered 2xx have the message and will
 *    get it again when the sender retries: duplicates are the safe
 *    direction.
 *  - else 250.
 * Refusals of the session itself (greeting, EHLO, XCLIENT, RSET), even 5xx,
 * are a fault between the edge and its own downstream, not a verdict on the
 * message: they give 451 (the 5.x.y made 4.x.y), never a bounce. A reply
 * of the wrong class (a 250 to DATA, a 354 to RCPT) is a garbled exchange:
 * 451 4.5.0.
 *
 * The bytes: MAIL, RCPT and DATA; when the downstream offers PIPELINING
 * (RFC 2920) MAIL, the RCPTs and DATA go in one write (the RCPTs in batches
 * of RELAY_PIPE_BATCH, DATA with the last) and the replies are read in
 * order, every one checked. A transaction the rule abandons after a
 * pipelined DATA was accepted is cut by closing the connection, never by a
 * dot, so nothing is delivered. Then the prefix and the body as one
 * dot-stuffed stream, a CRLF if it does not end with one, and the dot. The
 * downstream stores exactly prefix + body (plus that CRLF: SMTP cannot
 * carry a message without a final line end).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/msg.h"

#include "control/relay.h"

#define RELAY_LINE_MAX    2048u /* a reply line; RFC 5321 4.5.3.1.5 says 512 */
#define RELAY_REPLY_LINES 100u  /* lines of one (multiline) reply */
#define RELAY_RBUF        4096u
#define RELAY_WBUF        65536u
#define RELAY_CMD_MAX     512u /* RFC 5321 4.5.3.1.4, with CRLF */
#define RELAY_PIPE_BATCH \
	64u /* RCPTs in flight: the replies must not
				   * fill both socket buffers while we write */
#define RELAY_TIMEOUT_DEF 30000u
#define RELAY_IDLE_DEF    30000u
#define RELAY_CONNS_DEF   64u
#define RELAY_ADDRS       8u /* addresses of a name tried in turn */
#define RELAY_XLINES      4u /* XCLIENT commands at most */

/* What the EHLO/LHLO reply offered. */
enum {
	CAP_PIPELINING = 1u << 0,
	CAP_XCLIENT = 1u << 1,
	CAP_8BITMIME = 1u << 2,
	CAP_SMTPUTF8 = 1u << 3,
	XA_NAME = 1u << 8, /* XCLIENT attributes offered */
	XA_ADDR = 1u << 9,
	XA_PROTO = 1u << 10,
	XA_HELO = 1u << 11,
};

/* How an exchange with the downstream ended, when it did not end with a
 * reply. */
enum relay_io {
	IO_OK,
	IO_UNREACHABLE,
	IO_TIMEOUT,
	IO_CLOSED,
	IO_GARBLED,
	IO_LOCAL, /* our side: out of memory, bad input */
};

/* Each I/O failure's answer to the sender, in one table. */
static const struct {
	const char *enh;
	const char *what;
} io_answer[] = {
	[IO_UNREACHABLE] = { "4.4.1", "unreachable" },
	[IO_TIMEOUT] = { "4.4.1", "did not answer in time" },
	[IO_CLOSED] = { "4.4.2", "dropped the connection" },
	[IO_GARBLED] = { "4.5.0", "sent an invalid reply" },
	[IO_LOCAL] = { "4.3.0", "could not be given the message" },
};

/* Where a connection is; every state but S_IDLE and S_BODY waits for a
 * reply (S_CONNECT for the connect). */
enum conn_state {
	S_CONNECT,
	S_GREETING,
	S_HELLO,
	S_IDLE,
	S_RSET,
	S_XCLIENT,
	S_XHELLO, /* the EHLO after XCLIENT */
	S_MAIL,
	S_RCPT,
	S_DATA,
	S_BODY,
	S_FINAL,
};

/* One reply: its code, enhanced code and first line's text. */
struct reply {
	uint16_t code;
	char enh[8];
	char text[200];
};

/* One message, from relay_submit to its done call. */
struct job {
	struct job *next; /* in the inbox or the FIFO */
	struct relay *r;
	struct relay_msg m; /* its strings in this allocation */
	relay_done_fn *done;
	void *arg;
	uint64_t deadline; /* for a connection */
	bool fresh;        /* a reused connection failed it: a new one only */
	struct relay_result res;
	const char *step;    /* for texts: the command waiting */
	uint32_t n2, n4, n5; /* recipients' outcomes so far */
	struct reply first2, first4, first5;
};

struct relay_conn {
	struct relay_conn *next; /* in the idle list */
	struct relay *r;
	int fd;
	enum conn_state state;
	uint32_t caps;       /* the latest EHLO's */
	uint32_t xclient;    /* CAP_XCLIENT and XA_*: the first EHLO's */
	uint64_t deadline;   /* of the wait under way */
	uint64_t idle_since; /* now_ms() when it became idle */
	struct job *job;
	unsigned slot; /* in r->conns */
	unsigned ai;   /* the address being tried */
	int conn_err;  /* the last connect's errno */
	bool reused;   /* the message began with RSET */
	bool pipelined;
	bool data_sent;
	bool eof;
	bool out_armed;
	bool dead; /* closed; freed at the end of the loop's turn */
	/* the reply being read */
	struct reply rep;
	uint32_t nlines, rcaps;
	/* the envelope */
	uint32_t sent, got, accepted;
	char xl[RELAY_XLINES][RELAY_CMD_MAX];
	unsigned nx, ix;
	/* the body stream */
	const struct chunk *bch;
	size_t boff;
	bool in_prefix, bol, body_done;
	size_t rpos, rlen, woff, wlen;
	char rbuf[RELAY_RBUF];
	char wbuf[RELAY_WBUF];
};

struct relay {
	char host[256];
	char port[8];
	char target[300]; /* as configured, for texts */
	char helo[256];
	bool lmtp;
	uint32_t pool_size;
	uint32_t max_conns;
	uint32_t timeout_ms;
	uint32_t final_timeout_ms;
	uint32_t idle_max_ms;
	struct sockaddr_storage addr[RELAY_ADDRS];
	socklen_t addrlen[RELAY_ADDRS];
	unsigned naddr;
	char resolve_err[128]; /* why naddr is 0 */
	uint64_t own_counters[RELAY__COUNTERS];
	uint64_t *ctr;
	/* between the submitting threads and the loop */
	pthread_mutex_t lock;
	struct job *inbox, **inbox_tail; /* guarded by lock */
	int evfd;
	atomic_bool stop;
	/* the loop's own */
	int ep;
	pthread_t thread;
	bool thread_ok, lock_ok;
	struct job *queue, **queue_tail;
	struct relay_conn **conns; /* max_conns places */
	unsigned nconns;
	struct relay_conn *idle; /* most recent first */
	uint32_t nidle;
	struct relay_conn *dead; /* closed this turn */
};

static void conn_close(struct relay_conn *c, bool quit);
static void conn_flush(struct relay_conn *c);
static void conn_fail(struct relay_conn *c, enum relay_io io);
static void begin_txn(struct relay_conn *c);

/* --- time, results ------------------------------------------------------ */

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
set_result(struct relay_result *res, uint16_t code, const char *enh, const char *fmt, ...)
{
	va_list ap;
	char *p;

	res->code = code;
	snprintf(res->enh, sizeof(res->enh), "%s", enh);
	va_start(ap, fmt);
	vsnprintf(res->text, sizeof(res->text), fmt, ap);
	va_end(ap);
	for (p = res->text; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
}

static void
fail_io(struct job *t, enum relay_io io)
{
	const char *why = t->step && strcmp(t->step, "end of data") == 0 &&
					  (io == IO_TIMEOUT || io == IO_CLOSED ||
					   io == IO_GARBLED) ?
				  "; the message may have been delivered and may arrive twice" :
				  "";

	/* After the final dot the downstream may have stored the message
	 * already: a 451 makes the sender retry, so it may arrive twice, which
	 * is the safe direction (a 250 here could lose it). */
	set_result(&t->res, 451, io_answer[io].enh, "downstream %s %s at %s%s", t->r->target,
		   io_answer[io].what, t->step ? t->step : "connect", why);
}

/* A refusal that is about the session, not the message: never a bounce. */
static void
fail_session(struct job *t, const struct reply *rep)
{
	char enh[8];

	if (rep->code < 400) { /* a 2xx or 3xx where none belongs */
		fail_io(t, IO_GARBLED);
		return;
	}

	snprintf(enh, sizeof(enh), "%s", rep->enh[0] ? rep->enh : "4.3.0");
	enh[0] = '4';
	set_result(&t->res, 451, enh, "downstream %s refused %s: %u %s", t->r->target, t->step,
		   rep->code, rep->text);
}

/* A refusal of the message (MAIL, RCPT, DATA, the dot). */
static void
fail_message(struct job *t, const struct reply *rep)
{
	if (rep->code < 400) {
		fail_io(t, IO_GARBLED);
	} else if (rep->code >= 500) {
		set_result(&t->res, rep->code, rep->enh[0] ? rep->enh : "5.0.0", "%s", rep->text);
		if (t->res.delivered)
			snprintf(t->res.text + strlen(t->res.text),
				 sizeof(t->res.text) - strlen(t->res.text),
				 " (delivered to %u of %u recipients)", t->res.delivered,
				 t->m.nrcpts);
	} else {
		set_result(&t->res, 451, rep->enh[0] ? rep->enh : "4.0.0",
			   "downstream %s deferred %s: %u %s", t->r->target, t->step, rep->code,
			   rep->text);
	}
}

/* --- counters, jobs ----------------------------------------------------- */

static void
count_inflight(struct relay *r, int delta)
{
	r->ctr[RELAY_INFLIGHT] += (uint64_t)(int64_t)delta;
	if (r->ctr[RELAY_INFLIGHT] > r->ctr[RELAY_INFLIGHT_MAX])
		r->ctr[RELAY_INFLIGHT_MAX] = r->ctr[RELAY_INFLIGHT];
}

/* The message's answer, then its memory. */
static void
job_done(struct job *j)
{
	j->done(j->arg, &j->res);
	free(j);
}

/* --- reading replies ---------------------------------------------------- */

static bool
word_is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

/* One line of an EHLO reply after the first: a keyword and its params. */
static void
parse_cap(const char *s, size_t len, uint32_t *caps)
{
	static const struct {
		const char *word;
		uint32_t bit;
	} attrs[] = {
		{ "NAME", XA_NAME },
		{ "ADDR", XA_ADDR },
		{ "PROTO", XA_PROTO },
		{ "HELO", XA_HELO },
	};
	size_t i = 0, w;

	while (i < len && s[i] != ' ')
		i++;
	if (word_is(s, i, "PIPELINING"))
		*caps |= CAP_PIPELINING;
	else if (word_is(s, i, "8BITMIME"))
		*caps |= CAP_8BITMIME;
	else if (word_is(s, i, "SMTPUTF8"))
		*caps |= CAP_SMTPUTF8;
	else if (word_is(s, i, "XCLIENT")) {
		*caps |= CAP_XCLIENT;
		while (i < len) {
			while (i < len && s[i] == ' ')
				i++;
			for (w = i; i < len && s[i] != ' '; i++)
				;
			for (size_t a = 0; a < sizeof(attrs) / sizeof(attrs[0]); a++)
				if (word_is(s + w, i - w, attrs[a].word))
					*caps |= attrs[a].bit;
		}
	}
}

/* The enhanced code at the start of a text (RFC 2034), when its class
 * matches the reply's. */
static size_t
parse_enh(const char *s, size_t len, uint16_t code, char enh[8])
{
	size_t i = 0, part, digits;

	for (part = 0; part < 3; part++) {
		for (digits = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
		if (digits == 0 || digits > (part ? 3u : 1u))
			return 0;
		if (part < 2 && (i >= len || s[i++] != '.'))
			return 0;
	}
	if ((i < len && s[i] != ' ') || i > 7 || s[0] - '0' != code / 100)
		return 0;
	memcpy(enh, s, i);
	enh[i] = '\0';
	return i < len ? i + 1 : i;
}
/* One line into the reply being read: 1 when the reply is whole, 0 when
 * more lines follow, -1 when garbled. */
static int
reply_line(struct relay_conn *c, const char *l, size_t len, bool want_caps)
{
	uint16_t code;
	size_t skip;

	if (++c->nlines > RELAY_REPLY_LINES)
		return -1;
	if (len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
	    l[2] > '9' || (len > 3 && l[3] != ' ' && l[3] != '-'))
		return -1;
	code = (uint16_t)((l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0'));
	if (c->nlines > 1 && code != c->rep.code)
		return -1;
	l += len > 3 ? 4 : 3;
	len -= len > 3 ? 4 : 3;
	if (c->nlines == 1) {
		c->rep.code = code;
		skip = parse_enh(l, len, code, c->rep.enh);
		snprintf(c->rep.text, sizeof(c->rep.text), "%.*s", (int)(len - skip), l + skip);
	} else if (want_caps) {
		parse_cap(l, len, &c->rcaps);
	}
	return l[-1] == '-' ? 0 : 1;
}

/* The next whole reply in the read buffer: IO_OK with *got true when there
 * is one (in c->rep, and c->rcaps for an EHLO), *got false when more bytes
 * are needed. */
static enum relay_io
next_reply(struct relay_conn *c, bool *got)
{
	bool caps = c->state == S_HELLO || c->state == S_XHELLO;

	*got = false;
	for (;;) {
		char *start = c->rbuf + c->rpos, *lf;
		size_t len;
		int rc;

		lf = memchr(start, '\n', c->rlen - c->rpos);
		if (!lf)
			return c->rlen - c->rpos >= RELAY_LINE_MAX ? IO_GARBLED : IO_OK;
		len = (size_t)(lf - start);
		if (len > 0 && start[len - 1] == '\r')
			len--;
		c->rpos = (size_t)(lf + 1 - c->rbuf);
		if (c->nlines == 0) {
			memset(&c->rep, 0, sizeof(c->rep));
			c->rcaps = 0;
		}
		rc = reply_line(c, start, len, caps);
		if (rc < 0)
			return IO_GARBLED;
		if (rc > 0) {
			c->nlines = 0;
			*got = true;
			return IO_OK;
		}
	}
}

/* --- writing ------------------------------------------------------------ */

static enum relay_io
put(struct relay_conn *c, const void *p, size_t n)
{
	if (c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (sizeof(c->wbuf) - c->wlen < n && c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
	}
	if (sizeof(c->wbuf) - c->wlen < n)
		return IO_LOCAL;
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
	return IO_OK;
}

/* A command line; the caller has checked that its arguments hold no
 * control characters. */
static enum relay_io
put_cmd(struct relay_conn *c, const char *fmt, ...)
{
	char line[RELAY_CMD_MAX + 64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > sizeof(line) - 3)
		return IO_LOCAL;
	memcpy(line + n, "\r\n", 2);
	return put(c, line, (size_t)n + 2);
}

/* Fills the write buffer from the message: the prefix and the body's
 * chunks as one stream, dot-stuffed (RFC 5321 4.5.2: a line that starts
 * with '.' gets one more), then the CRLF it may lack and the dot. */
static void
fill_body(struct relay_conn *c)
{
	const struct relay_msg *m = &c->job->m;

	while (!c->body_done) {
		size_t room = sizeof(c->wbuf) - c->wlen, n, k;
		const uint8_t *p, *lf;

		if (c->in_prefix) {
			p = (const uint8_t *)m->prefix + c->boff;
			n = m->prefix_len - c->boff;
		} else if (c->bch) {
			p = c->bch->data + c->boff;
			n = c->bch->len - c->boff;
		} else {
			/* SMTP cannot carry a message that does not end with
			 * CRLF: the downstream stores one more CRLF than we
			 * received. */
			if (room < 5)
				return;
			if (!c->bol) {
				memcpy(c->wbuf + c->wlen, "\r\n", 2);
				c->wlen += 2;
			}
			memcpy(c->wbuf + c->wlen, ".\r\n", 3);
			c->wlen += 3;
			c->body_done = true;
			return;
		}
		if (n == 0) {
			if (c->in_prefix)
				c->bch = m->body;
			else
				c->bch = c->bch->next;
			c->in_prefix = false;
			c->boff = 0;
			continue;
		}
		if (room < 2)
			return;
		if (c->bol && p[0] == '.') {
			c->wbuf[c->wlen++] = '.';
			room--;
		}
		lf = memchr(p, '\n', n);
		k = lf ? (size_t)(lf - p) + 1 : n;
		if (k > room)
			k = room;
		memcpy(c->wbuf + c->wlen, p, k);
		c->wlen += k;
		c->boff += k;
		c->bol = p[k - 1] == '\n';
	}
}

/* --- connections -------------------------------------------------------- */

static void
arm(struct relay_conn *c, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };

	if (out == c->out_armed)
		return;
	c->out_armed = out;
	(void)epoll_ctl(c->r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
idle_unlink(struct relay_conn *c)
{
	struct relay_conn **p;

	for (p = &c->r->idle; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			c->r->nidle--;
			return;
		}
}

/* Closes c; its message, if any, was answered already. Its memory stays
 * until the loop's turn ends, so that whoever called can still see it is
 * dead. */
static void
conn_close(struct relay_conn *c, bool quit)
{
	struct relay *r = c->r;

	if (c->dead)
		return;
	if (c->state == S_IDLE)
		idle_unlink(c);
	if (c->fd >= 0) {
		/* Best effort, never waited for: the downstream logs a clean
		 * end instead of a lost connection. */
		if (quit)
			(void)send(c->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(c->fd); /* leaves the epoll set with it */
	}
	r->conns[c->slot] = r->conns[--r->nconns];
	r->conns[c->slot]->slot = c->slot;
	r->ctr[RELAY_CONN_OPEN] = r->nconns;
	c->fd = -1;
	c->dead = true;
	c->next = r->dead;
	r->dead = c;
}

static void
bury(struct relay *r)
{
	while (r->dead) {
		struct relay_conn *c = r->dead;

		r->dead = c->next;
		free(c);
	}
}

/* The connection's message is answered (res filled); on success the
 * connection goes on to the next message, or idle, or is closed. */
static void
conn_finish(struct relay_conn *c, bool ok)
{
	struct relay *r = c->r;
	struct job *j = c->job;

	c->job = NULL;
	count_inflight(r, -1);
	job_done(j);
	if (!ok || c->rpos != c->rlen || c->eof) {
		/* A reply nobody asked for: not worth the doubt either. */
		conn_close(c, ok);
		return;
	}
	c->rpos = c->rlen = 0;
	if (r->queue && !r->queue->fresh) {
		c->job = r->queue;
		r->queue = c->job->next;
		if (!r->queue)
			r->queue_tail = &r->queue;
		r->ctr[RELAY_QUEUED]--;
		count_inflight(r, 1);
		c->reused = true;
		r->ctr[RELAY_CONN_REUSED]++;
		c->job->step = "RSET";
		c->state = S_RSET;
		c->deadline = now_ms() + r->timeout_ms;
		if (put_cmd(c, "RSET") != IO_OK)
			conn_fail(c, IO_LOCAL);
		else
			conn_flush(c);
		return;
	}
	if (r->nidle >= r->pool_size) {
		conn_close(c, true);
		return;
	}
	c->state = S_IDLE;
	c->idle_since = now_ms();
	c->next = r->idle;
	r->idle = c;
	r->nidle++;
}

/* The message goes back to the head of the queue, for a fresh connection:
 * the reused one died before any of it was sent. */
static void
conn_retry(struct relay_conn *c)
{
	struct relay *r = c->r;
	struct job *j = c->job;

	c->job = NULL;
	count_inflight(r, -1);
	j->fresh = true;
	j->deadline = now_ms() + r->timeout_ms; /* a wait of its own */
	memset(&j->res, 0, sizeof(j->res));
	j->next = r->queue;
	r->queue = j;
	if (!j->next)
		r->queue_tail = &j->next;
	r->ctr[RELAY_QUEUED]++;
	conn_close(c, false);
}

/* An exchange that ended without the reply it waited for. */
static void
conn_fail(struct relay_conn *c, enum relay_io io)
{
	if (c->reused && (c->state == S_RSET || c->state == S_XCLIENT || c->state == S_XHELLO)) {
		conn_retry(c);
		return;
	}
	if (c->state == S_FINAL)
		c->job->res.delivered = c->job->n2;
	fail_io(c->job, io);
	conn_finish(c, false);
}

/* Writes what the buffer holds (and, in S_BODY, the message as room
 * allows); waits for room with EPOLLOUT. */
static void
conn_flush(struct relay_conn *c)
{
	struct relay *r = c->r;

	for (;;) {
		while (c->woff < c->wlen) {
			ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n > 0) {
				c->woff += (size_t)n;
				if (c->state == S_BODY)
					c->deadline = now_ms() + r->timeout_ms;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				/* Each wait for room is bounded: a downstream that
				 * stops reading is cut off after one timeout. */
				if (c->state != S_BODY)
					c->deadline = now_ms() + r->timeout_ms;
				arm(c, true);
				return;
			}
			conn_fail(c, IO_CLOSED);
			return;
		}
		c->woff = c->wlen = 0;
		if (c->state != S_BODY || c->body_done)
			break;
		fill_body(c);
	}
	arm(c, false);
	if (c->state == S_BODY) {
		c->state = S_FINAL;
		c->job->step = "end of data";
		c->deadline = now_ms() + r->final_timeout_ms;
	}
}

/* Starts a connect to the next address; false when none is left. */
static bool
try_connect(struct relay_conn *c)
{
	struct relay *r = c->r;

	for (; c->ai < r->naddr; c->ai++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
		const struct sockaddr *sa = (const struct sockaddr *)&r->addr[c->ai];
		int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			c->conn_err = errno;
			continue;
		}
		if (connect(fd, sa, r->addrlen[c->ai]) < 0 && errno != EINPROGRESS) {
			c->conn_err = errno;
			close(fd);
			continue;
		}
		if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			c->conn_err = errno;
			close(fd);
			continue;
		}
		c->fd = fd;
		c->out_armed = true;
		return true;
	}
	return false;
}

static void
fail_unreachable(struct relay_conn *c)
{
	char eb[128];

	set_result(&c->job->res, 451, "4.4.1", "downstream %s unreachable: %s", c->r->target,
		   c->r->naddr ? strerror_r(c->conn_err, eb, sizeof(eb)) : c->r->resolve_err);
	conn_finish(c, false);
}

/* A fresh connection for j. */
static void
conn_open(struct relay *r, struct job *j)
{
	struct relay_conn *c = calloc(1, sizeof(*c));

	count_inflight(r, 1);
	if (!c) {
		fail_io(j, IO_LOCAL);
		count_inflight(r, -1);
		job_done(j);
		return;
	}
	c->r = r;
	c->fd = -1;
	c->job = j;
	c->state = S_CONNECT;
	c->slot = r->nconns;
	r->conns[r->nconns++] = c;
	r->ctr[RELAY_CONN_OPEN] = r->nconns;
	j->step = "connect";
	c->deadline = now_ms() + r->timeout_ms;
	if (!try_connect(c))
		fail_unreachable(c);
}

static void
connected(struct relay_conn *c)
{
	struct relay *r = c->r;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr != 0) {
		c->conn_err = soerr;
		(void)epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		c->ai++;
		if (!try_connect(c))
			fail_unreachable(c);
		return;
	}
	r->ctr[RELAY_CONN_OPENED]++;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	arm(c, false);
	c->state = S_GREETING;
	c->job->step = "greeting";
	c->deadline = now_ms() + r->timeout_ms;
}

/* --- the transaction ---------------------------------------------------- */

static bool
safe_arg(const char *s, bool spaces)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || (*s == ' ' && !spaces))
			return false;
	return true;
}

/* RFC 3461 xtext, as XCLIENT wants its values; "" when it does not fit in
 * n bytes (XCLIENT values are at most 255 characters). */
static void
xtext(char *out, size_t n, const char *s)
{
	size_t o = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (o + 4 > n) {
			out[0] = '\0';
			return;
		}
		if (ch < '!' || ch > '~' || ch == '+' || ch == '=')
			o += (size_t)snprintf(out + o, n - o, "+%02X", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
}

/* XCLIENT with the attributes offered, as few commands as fit in 512
 * bytes each, into c->xl. */
static void
build_xclient(struct relay_conn *c)
{
	const struct relay_msg *m = &c->job->m;
	char addr[INET6_ADDRSTRLEN + 8] = "[UNAVAILABLE]", val[256];
	char ntop[INET6_ADDRSTRLEN];
	char attr[4][300];
	uint32_t caps = c->xclient;
	size_t na = 0, len, i;

	if (m->addr && (m->family == 4 || m->family == 6) &&
	    inet_ntop(m->family == 6 ? AF_INET6 : AF_INET, m->addr, ntop, sizeof(ntop)))
		snprintf(addr, sizeof(addr), "%s%s", m->family == 6 ? "IPV6:" : "", ntop);
	if (caps & XA_NAME) {
		val[0] = '\0';
		if (m->ptr == PTR_PASS && m->ptr_name)
			xtext(val, sizeof(val), m->ptr_name);
		snprintf(attr[na++], sizeof(attr[0]), "NAME=%.255s",
			 val[0]                                           ? val :
			 m->ptr == PTR_TEMPERROR || m->ptr == PTR_UNKNOWN ? "[TEMPUNAVAIL]" :
									    "[UNAVAILABLE]");
	}
	if (caps & XA_ADDR)
		snprintf(attr[na++], sizeof(attr[0]), "ADDR=%s", addr);
	if (caps & XA_PROTO)
		snprintf(attr[na++], sizeof(attr[0]), "PROTO=ESMTP");
	if (caps & XA_HELO) {
		xtext(val, sizeof(val), m->helo ? m->helo : "");
		snprintf(attr[na++], sizeof(attr[0]), "HELO=%.255s",
			 val[0] ? val : "[UNAVAILABLE]");
	}
	c->nx = c->ix = 0;
	for (i = 0; i < na && c->nx < RELAY_XLINES;) {
		char *line = c->xl[c->nx++];

		len = (size_t)snprintf(line, RELAY_CMD_MAX, "XCLIENT");
		while (i < na && len + 1 + strlen(attr[i]) + 2 <= RELAY_CMD_MAX)
			len += (size_t)snprintf(line + len, RELAY_CMD_MAX - len, " %s", attr[i++]);
	}
}

/* Counts one recipient's answer into the worst-wins rule. */
static void
tally(struct job *t, const struct reply *rep)
{
	if (rep->code < 300) {
		if (t->n2++ == 0)
			t->first2 = *rep;
	} else if (rep->code < 500) {
		if (t->n4++ == 0)
			t->first4 = *rep;
	} else if (t->n5++ == 0) {
		t->first5 = *rep;
	}
}

/* Sends a command and waits for its reply in state s. */
static void
send_cmd(struct relay_conn *c, enum conn_state s, const char *step, const char *fmt,
	 const char *arg)
{
	c->state = s;
	c->job->step = step;
	c->deadline = now_ms() + c->r->timeout_ms;
	if (put_cmd(c, fmt, arg) != IO_OK) {
		conn_fail(c, IO_LOCAL);
		return;
	}
	conn_flush(c);
}

static void
send_hello(struct relay_conn *c, enum conn_state s, const char *name)
{
	send_cmd(c, s, c->r->lmtp ? "LHLO" : "EHLO", c->r->lmtp ? "LHLO %s" : "EHLO %s", name);
}

/* The next RCPTs (all of a batch when pipelining, else one), and DATA
 * after the last when pipelining. */
static enum relay_io
put_rcpts(struct relay_conn *c)
{
	const struct relay_msg *m = &c->job->m;
	uint32_t batch = c->pipelined ? RELAY_PIPE_BATCH : 1, i;
	enum relay_io io = IO_OK;

	for (i = 0; io == IO_OK && i < batch && c->sent < m->nrcpts; i++)
		io = put_cmd(c, "RCPT TO:<%s>", m->rcpts[c->sent++]);
	if (io == IO_OK && c->pipelined && c->sent == m->nrcpts) {
		io = put_cmd(c, "DATA");
		c->data_sent = true;
	}
	return io;
}

/* MAIL, and with PIPELINING the first RCPTs (and DATA) in the same write. */
static void
send_envelope(struct relay_conn *c)
{
	const struct relay_msg *m = &c->job->m;
	enum relay_io io;

	c->pipelined = (c->caps & CAP_PIPELINING) != 0;
	c->sent = c->got = 0;
	c->data_sent = false;
	c->state = S_MAIL;
	c->job->step = "MAIL";
	c->deadline = now_ms() + c->r->timeout_ms;
	io = put_cmd(c, "MAIL FROM:<%s>%s%s", m->mail_from,
		     m->body_8bit && (c->caps & CAP_8BITMIME) ? " BODY=8BITMIME" : "",
		     m->smtputf8 && (c->caps & CAP_SMTPUTF8) ? " SMTPUTF8" : "");
	if (io == IO_OK && c->pipelined) {
		io = put_rcpts(c);
		c->r->ctr[RELAY_PIPELINED]++;
	}
	if (io != IO_OK) {
		conn_fail(c, IO_LOCAL);
		return;
	}
	conn_flush(c);
}

/* The message's part on its connection, once greeted (and RSET). */
static void
begin_txn(struct relay_conn *c)
{
	struct job *j = c->job;

	j->n2 = j->n4 = j->n5 = 0;
	if (c->xclient & CAP_XCLIENT) {
		build_xclient(c);
		if (c->nx > 0) {
			send_cmd(c, S_XCLIENT, "XCLIENT", "%s", c->xl[c->ix++]);
			return;
		}
	}
	send_envelope(c);
}

/* After the last RCPT reply: on to DATA, or the rule's answer. */
static void
after_rcpts(struct relay_conn *c)
{
	struct job *j = c->job;

	if (j->n5 > 0 && j->n2 == 0) {
		fail_message(j, &j->first5);
		conn_finish(c, false);
		return;
	}
	if (j->n4 > 0 && j->n5 == 0) {
		/* Nothing is delivered yet: the retry will duplicate nothing.
		 * A pipelined DATA is never followed by the dot: the
		 * connection is closed. */
		fail_message(j, &j->first4);
		conn_finish(c, false);
		return;
	}
	c->accepted = j->n2;
	if (c->data_sent) {
		c->state = S_DATA;
		j->step = "DATA";
		c->deadline = now_ms() + c->r->timeout_ms;
		return;
	}
	send_cmd(c, S_DATA, "DATA", "%s", "DATA");
}

/* After the dot: one reply (SMTP) or one per accepted recipient (LMTP). */
static void
on_final(struct relay_conn *c, const struct reply *rep)
{
	struct job *t = c->job;

	tally(t, rep);
	if (c->r->lmtp && ++c->got < c->accepted) {
		c->deadline = now_ms() + c->r->final_timeout_ms;
		return;
	}
	if (!c->r->lmtp) {
		/* One reply for all the recipients accepted at RCPT. */
		if (rep->code / 100 != 2) {
			t->res.delivered = 0;
			fail_message(t, rep);
			conn_finish(c, false);
			return;
		}
		t->n2 = c->accepted;
	}
	t->res.delivered = t->n2;
	if (t->n5 > 0) {
		/* A refusal at RCPT time, or a recipient refused after the dot
		 * in LMTP: the message reached the others (see the top). */
		fail_message(t, &t->first5);
		conn_finish(c, false);
		return;
	}
	if (t->n4 > 0) {
		/* LMTP only: those that answered 2xx have it, and get it again
		 * when the sender retries. */
		fail_message(t, &t->first4);
		conn_finish(c, false);
		return;
	}
	set_result(&t->res, 250, t->first2.enh[0] ? t->first2.enh : "2.0.0", "%s", t->first2.text);
	conn_finish(c, true);
}

/* One whole reply, in the connection's state. */
static void
on_reply(struct relay_conn *c, const struct reply *rep)
{
	struct relay *r = c->r;
	struct job *j = c->job;
	const struct relay_msg *m = &j->m;

	switch (c->state) {
	case S_GREETING:
		if (rep->code != 220) {
			fail_session(j, rep);
			conn_finish(c, false);
			return;
		}
		send_hello(c, S_HELLO, r->helo);
		return;
	case S_HELLO:
		c->caps = c->rcaps;
		if (rep->code != 250) {
			fail_session(j, rep);
			conn_finish(c, false);
			return;
		}
		c->xclient = c->caps & (CAP_XCLIENT | XA_NAME | XA_ADDR | XA_PROTO | XA_HELO);
		begin_txn(c);
		return;
	case S_RSET:
		if (rep->code / 100 != 2) {
			conn_retry(c);
			return;
		}
		begin_txn(c);
		return;
	case S_XCLIENT:
		if (rep->code / 100 != 2) {
			/* A reused connection that refuses XCLIENT now may
			 * have let it be used once only: a fresh one is tried,
			 * none of the message sent. */
			if (c->reused) {
				conn_retry(c);
				return;
			}
			fail_session(j, rep);
			conn_finish(c, false);
			return;
		}
		if (c->ix < c->nx) {
			send_cmd(c, S_XCLIENT, "XCLIENT", "%s", c->xl[c->ix++]);
			return;
		}
		/* A new EHLO under the client's own HELO name (the
		 * downstream takes the EHLO argument as the HELO name). */
		send_hello(
			c, S_XHELLO,
			m->helo && m->helo[0] && strlen(m->helo) < 256 && safe_arg(m->helo, false) ?
				m->helo :
				r->helo);
		return;
	case S_XHELLO:
		c->caps = c->rcaps;
		if (rep->code != 250) {
			if (c->reused) {
				conn_retry(c);
				return;
			}
			fail_session(j, rep);
			conn_finish(c, false);
			return;
		}
		send_envelope(c);
		return;
	case S_MAIL:
		if (rep->code / 100 != 2) {
			fail_message(j, rep);
			conn_finish(c, false);
			return;
		}
		c->state = S_RCPT;
		j->step = "RCPT";
		c->deadline = now_ms() + r->timeout_ms;
		if (!c->pipelined) {
			if (put_rcpts(c) != IO_OK)
				conn_fail(c, IO_LOCAL);
			else
				conn_flush(c);
		}
		return;
	case S_RCPT:
		tally(j, rep);
		c->deadline = now_ms() + r->timeout_ms;
		if (++c->got < c->sent)
			return;
		if (c->sent < m->nrcpts) {
			if (put_rcpts(c) != IO_OK)
				conn_fail(c, IO_LOCAL);
			else
				conn_flush(c);
			return;
		}
		after_rcpts(c);
		return;
	case S_DATA:
		if (rep->code != 354) {
			fail_message(j, rep);
			conn_finish(c, false);
			return;
		}
		c->state = S_BODY;
		j->step = "message";
		c->in_prefix = true;
		c->boff = 0;
		c->bch = NULL;
		c->bol = true;
		c->body_done = false;
		c->got = 0;
		j->n2 = j->n4 = 0; /* RCPT's 5xx stay counted */
		c->deadline = now_ms() + r->timeout_ms;
		fill_body(c);
		conn_flush(c);
		/* The whole message may have gone at once, and its reply be
		 * here already: conn_input reads on, as for any state that
		 * waits for a reply. */
		return;
	case S_FINAL: on_final(c, rep); return;
	default: conn_fail(c, IO_GARBLED); return;
	}
}

/* Input on a connection: read what there is, then every whole reply. */
static void
conn_input(struct relay_conn *c)
{
	for (;;) {
		enum conn_state st = c->state;
		ssize_t n;
		bool got;

		if (c->rpos > 0) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		n = 0;
		if (!c->eof && c->rlen < sizeof(c->rbuf)) {
			n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, MSG_DONTWAIT);
			if (n > 0)
				c->rlen += (size_t)n;
			else if (n == 0 ||
				 (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
				c->eof = true;
		}
		if (st == S_IDLE) {
			/* Input or a hangup while idle (a 421 before a close,
			 * say): dead. */
			if (n > 0 || c->eof)
				conn_close(c, false);
			return;
		}
		if (st == S_BODY || st == S_CONNECT) {
			/* Nothing is asked: a reply now is out of turn. */
			if (c->eof)
				conn_fail(c, IO_CLOSED);
			else if (c->rlen == sizeof(c->rbuf))
				conn_fail(c, IO_GARBLED);
			return;
		}
		for (;;) {
			enum relay_io io = next_reply(c, &got);

			if (io != IO_OK) {
				conn_fail(c, io);
				return;
			}
			if (!got)
				break;
			on_reply(c, &c->rep);
			/* Pipelined replies may have come together: on while
			 * the connection lives and waits for one. */
			if (c->dead || c->state == S_IDLE || c->state == S_BODY)
				return;
		}
		if (c->eof) {
			conn_fail(c, IO_CLOSED);
			return;
		}
		if (n <= 0)
			return;
	}
}

/* --- the loop ----------------------------------------------------------- */

/* Messages waiting for a connection get one, as far as they go. */
static void
dispatch(struct relay *r)
{
	uint64_t now = now_ms();

	while (r->queue) {
		struct job *j = r->queue;
		struct relay_conn *c = NULL;

		while (!j->fresh && r->idle && !c) {
			c = r->idle;
			r->idle = c->next;
			r->nidle--;
			c->state = S_RSET; /* off the idle list */
			if (now - c->idle_since > r->idle_max_ms) {
				/* Likely dead (a firewall may have forgotten
				 * it without a word): not reused. */
				conn_close(c, true);
				c = NULL;
			}
		}
		if (!c && r->nconns >= r->max_conns && r->idle)
			conn_close(r->idle, true); /* room for a fresh one */
		if (!c && r->nconns >= r->max_conns)
			return;
		r->queue = j->next;
		if (!r->queue)
			r->queue_tail = &r->queue;
		r->ctr[RELAY_QUEUED]--;
		if (!c) {
			conn_open(r, j);
			continue;
		}
		c->job = j;
		c->reused = true;
		count_inflight(r, 1);
		r->ctr[RELAY_CONN_REUSED]++;
		send_cmd(c, S_RSET, "RSET", "%s", "RSET");
	}
}

/* Whatever waited past its deadline. */
static void
expire(struct relay *r)
{
	uint64_t now = now_ms();
	unsigned i;

	for (i = 0; i < r->nconns;) {
		struct relay_conn *c = r->conns[i];

		if (c->state != S_IDLE && c->deadline <= now) {
			conn_fail(c, IO_TIMEOUT); /* closes it: conns[i] is another */
			if (i < r->nconns && r->conns[i] == c)
				i++;
			continue;
		}
		i++;
	}
	while (r->queue && r->queue->deadline <= now) {
		struct job *j = r->queue;

		r->queue = j->next;
		if (!r->queue)
			r->queue_tail = &r->queue;
		r->ctr[RELAY_QUEUED]--;
		set_result(&j->res, 451, "4.4.5",
			   "downstream %s busy: no connection free within %u ms", r->target,
			   r->timeout_ms);
		job_done(j);
	}
}

static int
next_wait_ms(struct relay *r)
{
	uint64_t now = now_ms(), first = UINT64_MAX;
	unsigned i;

	for (i = 0; i < r->nconns; i++)
		if (r->conns[i]->state != S_IDLE && r->conns[i]->deadline < first)
			first = r->conns[i]->deadline;
	if (r->queue && r->queue->deadline < first)
		first = r->queue->deadline;
	if (first == UINT64_MAX)
		return -1;
	return first <= now ? 0 : (int)(first - now > 60000 ? 60000 : first - now);
}

static void
take_inbox(struct relay *r)
{
	struct job *j;
	uint64_t v;

	(void)!read(r->evfd, &v, sizeof(v));
	pthread_mutex_lock(&r->lock);
	j = r->inbox;
	r->inbox = NULL;
	r->inbox_tail = &r->inbox;
	pthread_mutex_unlock(&r->lock);
	while (j) {
		struct job *next = j->next;

		j->next = NULL;
		*r->queue_tail = j;
		r->queue_tail = &j->next;
		r->ctr[RELAY_QUEUED]++;
		j = next;
	}
}

/* Every message not answered yet: 451, as the loop stops. */
static void
drain(struct relay *r)
{
	take_inbox(r);
	while (r->nconns > 0) {
		struct relay_conn *c = r->conns[r->nconns - 1];

		if (c->job) {
			set_result(&c->job->res, 451, "4.3.0", "relay shutting down");
			conn_finish(c, false);
		} else {
			conn_close(c, true);
		}
	}
	while (r->queue) {
		struct job *j = r->queue;

		r->queue = j->next;
		r->ctr[RELAY_QUEUED]--;
		set_result(&j->res, 451, "4.3.0", "relay shutting down");
		job_done(j);
	}
	r->queue_tail = &r->queue;
}

static void *
relay_loop(void *arg)
{
	struct relay *r = arg;
	struct epoll_event ev[64];

	while (!atomic_load(&r->stop)) {
		int n = epoll_wait(r->ep, ev, 64, next_wait_ms(r)), i;

		for (i = 0; i < n; i++) {
			struct relay_conn *c = ev[i].data.ptr;

			if (!c) {
				take_inbox(r);
				continue;
			}
			if (c->dead)
				continue;
			if (c->state == S_CONNECT) {
				if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
					connected(c);
				continue;
			}
			if (c->out_armed && (ev[i].events & EPOLLOUT)) {
				conn_flush(c);
				/* A reply that came while the message was being
				 * written is read now that it is asked for; new
				 * input waits for the next turn. */
				if (!c->dead && c->rpos < c->rlen && c->state == S_FINAL)
					conn_input(c);
				continue;
			}
			if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_input(c);
		}
		expire(r);
		dispatch(r);
		bury(r);
	}
	drain(r);
	bury(r);
	return NULL;
}

/* --- submitting --------------------------------------------------------- */

static bool
msg_ok(const struct relay_msg *m)
{
	uint32_t i;

	if (!m->mail_from || !safe_arg(m->mail_from, true) || strlen(m->mail_from) > 300 ||
	    m->nrcpts == 0 || !m->rcpts || (m->prefix_len && !m->prefix))
		return false;
	for (i = 0; i < m->nrcpts; i++)
		if (!m->rcpts[i] || !safe_arg(m->rcpts[i], true) || strlen(m->rcpts[i]) > 300)
			return false;
	return true;
}

/* s into the job's memory at *p. */
static const char *
own(char **p, const char *s, size_t n)
{
	char *d = *p;

	memcpy(d, s, n);
	d[n] = '\0';
	*p += n + 1;
	return d;
}

int
relay_submit(struct relay *r, const struct relay_msg *m, relay_done_fn *done, void *arg)
{
	const char *helo = m->helo ? m->helo : "", *ptr_name = m->ptr_name ? m->ptr_name : "";
	size_t need = sizeof(struct job), i;
	const char **rcpts;
	struct job *j;
	char *p;

	if (!msg_ok(m)) {
		errno = EINVAL;
		return -1;
	}
	need += m->nrcpts * sizeof(char *) + 16 + strlen(m->mail_from) + 1 + strlen(helo) + 1 +
		strlen(ptr_name) + 1 + m->prefix_len + 1;
	for (i = 0; i < m->nrcpts; i++)
		need += strlen(m->rcpts[i]) + 1;
	j = calloc(1, need);
	if (!j) {
		errno = ENOMEM;
		return -1;
	}
	j->r = r;
	j->m = *m;
	j->done = done;
	j->arg = arg;
	rcpts = (const char **)(j + 1);
	p = (char *)(rcpts + m->nrcpts);
	if (m->addr && (m->family == 4 || m->family == 6)) {
		memcpy(p, m->addr, m->family == 6 ? 16 : 4);
		j->m.addr = (const uint8_t *)p;
	} else {
		j->m.addr = NULL;
	}
	p += 16;
	j->m.mail_from = own(&p, m->mail_from, strlen(m->mail_from));
	j->m.helo = own(&p, helo, strlen(helo));
	j->m.ptr_name = own(&p, ptr_name, strlen(ptr_name));
	j->m.prefix = own(&p, m->prefix ? m->prefix : "", m->prefix_len);
	for (i = 0; i < m->nrcpts; i++)
		rcpts[i] = own(&p, m->rcpts[i], strlen(m->rcpts[i]));
	j->m.rcpts = rcpts;
	j->deadline = now_ms() + r->timeout_ms;
	pthread_mutex_lock(&r->lock);
	*r->inbox_tail = j;
	r->inbox_tail = &j->next;
	pthread_mutex_unlock(&r->lock);
	(void)!write(r->evfd, &(uint64_t){ 1 }, sizeof(uint64_t));
	return 0;
}

/* relay_deliver's wait for the loop's answer. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct relay_result *res;
};

static void
deliver_done(void *arg, const struct relay_result *res)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	*w->res = *res;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int
relay_deliver(struct relay *r, const struct relay_msg *m, struct relay_result *res)
{
	struct waiter w = {
		.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .res = res
	};

	memset(res, 0, sizeof(*res));
	if (relay_submit(r, m, deliver_done, &w) < 0) {
		/* The engine never passes these: a bug of ours, so a 4xx. */
		set_result(res, 451, "4.3.0",
			   errno == EINVAL ? "invalid envelope, not relayed" :
					     "out of memory, not relayed");
		return -1;
	}
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	return res->code / 100 == 2 ? 0 : -1;
}

/* --- setup -------------------------------------------------------------- */

static int
parse_target(struct relay *r, const char *target, char *err, size_t errlen)
{
	const char *colon, *host = target;
	size_t hlen;
	char *end;
	unsigned long port;

	if (target[0] == '[') {
		const char *close = strchr(target, ']');

		if (!close || close[1] != ':')
			goto bad;
		host = target + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(target, ':');
		if (!colon || strchr(target, ':') != colon)
			goto bad;
		hlen = (size_t)(colon - target);
	}
	if (hlen == 0 || hlen >= sizeof(r->host) || !safe_arg(target, false))
		goto bad;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || errno || port == 0 || port > 65535)
		goto bad;
	memcpy(r->host, host, hlen);
	r->host[hlen] = '\0';
	snprintf(r->port, sizeof(r->port), "%lu", port);
	return 0;
bad:
	snprintf(err, errlen,
		 "relay target \"%s\": want host:port, "
		 "v4addr:port or [v6addr]:port",
		 target);
	return -1;
}

/* The target's addresses, once: a literal as it is, a name through the
 * resolver (the loop never resolves). A name that does not resolve leaves
 * none, and every message the reason. */
static void
resolve(struct relay *r)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai, *a;
	int gai = getaddrinfo(r->host, r->port, &hints, &ai);

	if (gai != 0) {
		snprintf(r->resolve_err, sizeof(r->resolve_err), "%s", gai_strerror(gai));
		return;
	}
	for (a = ai; a && r->naddr < RELAY_ADDRS; a = a->ai_next) {
		if (a->ai_addrlen > sizeof(r->addr[0]))
			continue;
		memcpy(&r->addr[r->naddr], a->ai_addr, a->ai_addrlen);
		r->addrlen[r->naddr++] = a->ai_addrlen;
	}
	freeaddrinfo(ai);
	if (r->naddr == 0)
		snprintf(r->resolve_err, sizeof(r->resolve_err), "no address");
}

struct relay *
relay_create(const struct relay_params *p, char *err, size_t errlen)
{
	struct relay *r = calloc(1, sizeof(*r));
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->ep = r->evfd = -1;
	r->inbox_tail = &r->inbox;
	r->queue_tail = &r->queue;
	r->ctr = p->counters ? p->counters : r->own_counters;
	if (!p->target || !p->helo || !p->helo[0] || strlen(p->helo) >= sizeof(r->helo) ||
	    !safe_arg(p->helo, false)) {
		snprintf(err, errlen, "relay: a target and a hostname are needed");
		goto fail;
	}
	if (parse_target(r, p->target, err, errlen) < 0)
		goto fail;
	snprintf(r->target, sizeof(r->target), "%s", p->target);
	snprintf(r->helo, sizeof(r->helo), "%s", p->helo);
	r->lmtp = p->lmtp;
	r->pool_size = p->pool_size;
	r->max_conns = p->connections ? p->connections : RELAY_CONNS_DEF;
	r->timeout_ms = p->timeout_ms ? p->timeout_ms : RELAY_TIMEOUT_DEF;
	r->final_timeout_ms = p->final_timeout_ms ? p->final_timeout_ms : r->timeout_ms;
	r->idle_max_ms = p->idle_max_ms ? p->idle_max_ms : RELAY_IDLE_DEF;
	resolve(r);
	r->conns = calloc(r->max_conns, sizeof(*r->conns));
	if (!r->conns) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		snprintf(err, errlen, "relay: cannot create a mutex");
		goto fail;
	}
	r->lock_ok = true;
	r->ep = epoll_create1(EPOLL_CLOEXEC);
	r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->ep < 0 || r->evfd < 0 || epoll_ctl(r->ep, EPOLL_CTL_ADD, r->evfd, &ev) < 0) {
		snprintf(err, errlen, "relay: epoll: %s", strerror(errno));
		goto fail;
	}
	if (pthread_create(&r->thread, NULL, relay_loop, r) != 0) {
		snprintf(err, errlen, "relay: cannot start its thread");
		goto fail;
	}
	r->thread_ok = true;
	(void)pthread_setname_np(r->thread, "se-relay");
	return r;
fail:
	relay_destroy(r);
	return NULL;
}

void
relay_destroy(struct relay *r)
{
	if (!r)
		return;
	if (r->thread_ok) {
		atomic_store(&r->stop, true);
		(void)!write(r->evfd, &(uint64_t){ 1 }, sizeof(uint64_t));
		pthread_join(r->thread, NULL);
	}
	if (r->ep >= 0)
		close(r->ep);
	if (r->evfd >= 0)
		close(r->evfd);
	if (r->lock_ok)
		pthread_mutex_destroy(&r->lock);
	free(r->conns);
	free(r);
}
