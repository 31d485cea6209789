/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/relay.c — SMTP/LMTP delivery to the downstream MTA (see relay.h).
 *
 * The promise is the spool's: the sender hears 250 only once the next hop
 * has answered 250 to the final dot, and anything short of that is a 4xx,
 * so the sender keeps the message and retries. The work threads call
 * relay_deliver and wait (nothing here runs on a worker core); every wait
 * is a poll() with a deadline and every reply is bounded in lines and
 * bytes, so a downstream that stalls or babbles costs a thread one timeout,
 * never more.
 *
 * Connections: a shared list of idle ones under a mutex, never held across
 * network I/O. A pooled connection may have been closed by the downstream
 * while idle (Postfix drops idle clients after smtpd_timeout): it is tested
 * with a zero-timeout poll when taken (and not reused at all past
 * idle_max_ms), and if it still fails at its RSET, before any part of the
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
 * next message on the pooled connection could go on as the previous
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
 *    DATA, so the retry duplicates nothing. In LMTP, after the dot, the
 *    recipients that answered 2xx have the message and will get it again
 *    when the sender retries: duplicates are the safe direction.
 *  - else 250.
 * Refusals of the session itself (greeting, EHLO, XCLIENT, RSET), even 5xx,
 * are a fault between the edge and its own downstream, not a verdict on the
 * message: they give 451 (the 5.x.y made 4.x.y), never a bounce. A reply
 * of the wrong class (a 250 to DATA, a 354 to RCPT) is a garbled exchange:
 * 451 4.5.0.
 *
 * The bytes: MAIL, RCPT (in batches when PIPELINING is offered), DATA, then
 * the prefix and the body as one dot-stuffed stream, a CRLF if it does not
 * end with one, and the dot. The downstream stores exactly prefix + body
 * (plus that CRLF: SMTP cannot carry a message without a final line end).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct relay_conn {
	struct relay_conn *next;
	int fd;
	uint32_t caps;       /* the latest EHLO's */
	uint32_t xclient;    /* CAP_XCLIENT and XA_*: the first EHLO's */
	uint64_t idle_since; /* now_ms() when put in the pool */
	size_t rpos, rlen;
	size_t wlen;
	char rbuf[RELAY_RBUF];
	char wbuf[RELAY_WBUF];
};

struct relay {
	char host[256];
	char port[8];
	char target[300]; /* as configured, for texts */
	char helo[256];
	bool lmtp;
	bool lock_ok;
	uint32_t pool_size;
	uint32_t timeout_ms;
	uint32_t final_timeout_ms;
	uint32_t idle_max_ms;
	pthread_mutex_t lock;
	struct relay_conn *idle; /* guarded by lock */
	uint32_t nidle;          /* guarded by lock */
};

/* One reply: its code, enhanced code and first line's text. */
struct reply {
	uint16_t code;
	char enh[8];
	char text[200];
};

/* One message's exchange on one connection. */
struct txn {
	struct relay *r;
	struct relay_conn *c;
	const struct relay_msg *m;
	struct relay_result *res;
	const char *step;    /* for texts: the command waiting */
	uint32_t n2, n4, n5; /* recipients' outcomes so far */
	struct reply first2, first4, first5;
	bool bol; /* the body stream is at a line start */
};

/* --- time, results ------------------------------------------------------ */

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int
left_ms(uint64_t deadline)
{
	uint64_t now = now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
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
fail_io(struct txn *t, enum relay_io io)
{
	const char *why = t->step && strcmp(t->step, "end of data") == 0 &&
					  (io == IO_TIMEOUT || io == IO_CLOSED ||
					   io == IO_GARBLED) ?
				  "; the message may have been delivered and may arrive twice" :
				  "";

	/* After the final dot the downstream may have stored the message
	 * already: a 451 makes the sender retry, so it may arrive twice, which
	 * is the safe direction (a 250 here could lose it). */
	set_result(t->res, 451, io_answer[io].enh, "downstream %s %s at %s%s", t->r->target,
		   io_answer[io].what, t->step ? t->step : "connect", why);
}

/* A refusal that is about the session, not the message: never a bounce. */
static void
fail_session(struct txn *t, const struct reply *rep)
{
	char enh[8];

	if (rep->code < 400) { /* a 2xx or 3xx where none belongs */
		fail_io(t, IO_GARBLED);
		return;
	}

	snprintf(enh, sizeof(enh), "%s", rep->enh[0] ? rep->enh : "4.3.0");
	enh[0] = '4';
	set_result(t->res, 451, enh, "downstream %s refused %s: %u %s", t->r->target, t->step,
		   rep->code, rep->text);
}

/* A refusal of the message (MAIL, RCPT, DATA, the dot). */
static void
fail_message(struct txn *t, const struct reply *rep)
{
	if (rep->code < 400) {
		fail_io(t, IO_GARBLED);
	} else if (rep->code >= 500) {
		set_result(t->res, rep->code, rep->enh[0] ? rep->enh : "5.0.0", "%s", rep->text);
		if (t->res->delivered)
			snprintf(t->res->text + strlen(t->res->text),
				 sizeof(t->res->text) - strlen(t->res->text),
				 " (delivered to %u of %u recipients)", t->res->delivered,
				 t->m->nrcpts);
	} else {
		set_result(t->res, 451, rep->enh[0] ? rep->enh : "4.0.0",
			   "downstream %s deferred %s: %u %s", t->r->target, t->step, rep->code,
			   rep->text);
	}
}

/* --- reading replies ---------------------------------------------------- */

static enum relay_io
wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int ms = left_ms(deadline), n;

		if (ms == 0)
			return IO_TIMEOUT;
		n = poll(&pfd, 1, ms);
		if (n > 0)
			return IO_OK;
		if (n == 0)
			return IO_TIMEOUT;
		if (errno != EINTR)
			return IO_CLOSED;
	}
}

/* The next line, CRLF (or LF) stripped, valid until the next call. */
static enum relay_io
read_line(struct relay_conn *c, uint64_t deadline, char **line, size_t *len)
{
	for (;;) {
		char *start = c->rbuf + c->rpos;
		char *lf = memchr(start, '\n', c->rlen - c->rpos);
		enum relay_io io;
		ssize_t n;

		if (lf) {
			*line = start;
			*len = (size_t)(lf - start);
			if (*len > 0 && start[*len - 1] == '\r')
				(*len)--;
			c->rpos = (size_t)(lf + 1 - c->rbuf);
			return IO_OK;
		}
		if (c->rlen - c->rpos >= RELAY_LINE_MAX)
			return IO_GARBLED;
		if (c->rpos > 0) {
			memmove(c->rbuf, start, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		io = wait_fd(c->fd, POLLIN, deadline);
		if (io != IO_OK)
			return io;
		n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
		if (n == 0)
			return IO_CLOSED;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return IO_CLOSED;
		}
		c->rlen += (size_t)n;
	}
}

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

static enum relay_io
read_reply(struct txn *t, uint32_t timeout_ms, struct reply *rep, uint32_t *caps)
{
	uint64_t deadline = now_ms() + timeout_ms;
	uint32_t nlines;

	if (caps)
		*caps = 0;
	memset(rep, 0, sizeof(*rep));
	for (nlines = 1; nlines <= RELAY_REPLY_LINES; nlines++) {
		enum relay_io io;
		uint16_t code;
		size_t len, skip;
		char *l;

		io = read_line(t->c, deadline, &l, &len);
		if (io != IO_OK)
			return io;
		if (len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
		    l[2] > '9' || (len > 3 && l[3] != ' ' && l[3] != '-'))
			return IO_GARBLED;
		code = (uint16_t)((l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0'));
		if (nlines > 1 && code != rep->code)
			return IO_GARBLED;
		l += len > 3 ? 4 : 3;
		len -= len > 3 ? 4 : 3;
		if (nlines == 1) {
			rep->code = code;
			skip = parse_enh(l, len, code, rep->enh);
			snprintf(rep->text, sizeof(rep->text), "%.*s", (int)(len - skip), l + skip);
		} else if (caps) {
			parse_cap(l, len, caps);
		}
		if (l[-1] != '-')
			return IO_OK;
	}
	return IO_GARBLED;
}

/* --- writing ------------------------------------------------------------ */

static enum relay_io
flush(struct txn *t)
{
	struct relay_conn *c = t->c;
	size_t off = 0;

	while (off < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + off, c->wlen - off, MSG_NOSIGNAL);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EINTR))
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Each wait for room is bounded: a downstream that
			 * stops reading is cut off after one timeout. */
			enum relay_io io = wait_fd(c->fd, POLLOUT, now_ms() + t->r->timeout_ms);
			if (io != IO_OK)
				return io;
			continue;
		}
		return IO_CLOSED;
	}
	c->wlen = 0;
	return IO_OK;
}

static enum relay_io
put(struct txn *t, const void *p, size_t n)
{
	struct relay_conn *c = t->c;
	const char *s = p;

	while (n > 0) {
		size_t room = sizeof(c->wbuf) - c->wlen, k = n < room ? n : room;
		enum relay_io io;

		memcpy(c->wbuf + c->wlen, s, k);
		c->wlen += k;
		s += k;
		n -= k;
		if (c->wlen == sizeof(c->wbuf) && (io = flush(t)) != IO_OK)
			return io;
	}
	return IO_OK;
}

/* A command line; the caller has checked that its arguments hold no
 * control characters. */
static enum relay_io
put_cmd(struct txn *t, const char *fmt, ...)
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
	return put(t, line, (size_t)n + 2);
}

/* Message bytes, dot-stuffed (RFC 5321 4.5.2): a line that starts with '.'
 * gets one more. The line-start state runs across calls, so the prefix and
 * every chunk boundary are one stream. */
static enum relay_io
put_stuffed(struct txn *t, const uint8_t *p, size_t n)
{
	enum relay_io io;

	while (n > 0) {
		const uint8_t *lf;
		size_t k;

		if (t->bol && p[0] == '.' && (io = put(t, ".", 1)) != IO_OK)
			return io;
		lf = memchr(p, '\n', n);
		k = lf ? (size_t)(lf - p) + 1 : n;
		if ((io = put(t, p, k)) != IO_OK)
			return io;
		t->bol = lf != NULL;
		p += k;
		n -= k;
	}
	return IO_OK;
}

/* --- connections -------------------------------------------------------- */

static void
conn_close(struct relay_conn *c, bool quit)
{
	if (!c)
		return;
	if (c->fd >= 0) {
		/* Best effort, never waited for: the downstream logs a clean
		 * end instead of a lost connection. */
		if (quit)
			(void)send(c->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(c->fd);
	}
	free(c);
}

static enum relay_io
connect_one(const struct addrinfo *ai, uint64_t deadline, int *fdp, int *err)
{
	int fd, soerr = 0;
	socklen_t sl = sizeof(soerr);
	enum relay_io io;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		*err = errno;
		return IO_UNREACHABLE;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			*err = errno;
			close(fd);
			return IO_UNREACHABLE;
		}
		io = wait_fd(fd, POLLOUT, deadline);
		if (io == IO_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
		    soerr != 0) {
			*err = soerr;
			io = IO_UNREACHABLE;
		}
		if (io != IO_OK) {
			close(fd);
			return io;
		}
	}
	*fdp = fd;
	return IO_OK;
}

/* EHLO or LHLO with name; refreshes the connection's capabilities. */
static enum relay_io
hello(struct txn *t, const char *name, struct reply *rep)
{
	enum relay_io io;

	t->step = t->r->lmtp ? "LHLO" : "EHLO";
	if ((io = put_cmd(t, "%s %s", t->step, name)) != IO_OK || (io = flush(t)) != IO_OK)
		return io;
	return read_reply(t, t->r->timeout_ms, rep, &t->c->caps);
}

/* A fresh connection, greeted and introduced; t->c set on success. On
 * failure t->res is filled and -1 returned. */
static int
conn_open(struct txn *t)
{
	struct relay *r = t->r;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai, *a;
	uint64_t deadline = now_ms() + r->timeout_ms;
	enum relay_io io = IO_UNREACHABLE;
	struct reply rep;
	char eb[128];
	int fd = -1, err = 0, gai;

	t->step = "connect";
	gai = getaddrinfo(r->host, r->port, &hints, &ai);
	if (gai != 0) {
		set_result(t->res, 451, "4.4.1", "downstream %s unreachable: %s", r->target,
			   gai_strerror(gai));
		return -1;
	}
	for (a = ai; a; a = a->ai_next) {
		io = connect_one(a, deadline, &fd, &err);
		if (io == IO_OK || io == IO_TIMEOUT)
			break;
	}
	freeaddrinfo(ai);
	if (io == IO_UNREACHABLE) {
		set_result(t->res, 451, "4.4.1", "downstream %s unreachable: %s", r->target,
			   strerror_r(err, eb, sizeof(eb)));
		return -1;
	}
	if (io != IO_OK) {
		fail_io(t, io);
		return -1;
	}
	t->c = calloc(1, sizeof(*t->c));
	if (!t->c) {
		close(fd);
		fail_io(t, IO_LOCAL);
		return -1;
	}
	t->c->fd = fd;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	t->step = "greeting";
	io = read_reply(t, r->timeout_ms, &rep, NULL);
	if (io == IO_OK && rep.code == 220)
		io = hello(t, r->helo, &rep);
	else if (io == IO_OK) {
		fail_session(t, &rep);
		return -1;
	}
	if (io != IO_OK) {
		fail_io(t, io);
		return -1;
	}
	if (rep.code != 250) {
		fail_session(t, &rep);
		return -1;
	}
	t->c->xclient = t->c->caps & (CAP_XCLIENT | XA_NAME | XA_ADDR | XA_PROTO | XA_HELO);
	return 0;
}

/* An idle connection, or NULL. One that shows input or a hangup while idle
 * (a 421 before a close, say) is dead, and one idle too long is likely to
 * be (a firewall may have forgotten it without a word): either is closed
 * and the next taken. */
static struct relay_conn *
pool_take(struct relay *r)
{
	for (;;) {
		struct relay_conn *c;
		struct pollfd pfd;

		pthread_mutex_lock(&r->lock);
		c = r->idle;
		if (c) {
			r->idle = c->next;
			r->nidle--;
		}
		pthread_mutex_unlock(&r->lock);
		if (!c)
			return NULL;
		if (now_ms() - c->idle_since > r->idle_max_ms) {
			conn_close(c, true);
			continue;
		}
		pfd = (struct pollfd){ .fd = c->fd, .events = POLLIN };
		if (poll(&pfd, 1, 0) == 0 && c->rpos == c->rlen)
			return c;
		conn_close(c, false);
	}
}

static void
pool_give(struct relay *r, struct relay_conn *c)
{
	c->idle_since = now_ms();
	pthread_mutex_lock(&r->lock);
	if (r->nidle < r->pool_size) {
		c->next = r->idle;
		r->idle = c;
		r->nidle++;
		c = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	conn_close(c, true);
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
 * bytes each, then a new EHLO under the client's own HELO name (the
 * downstream takes the EHLO argument as the HELO name). */
static int
send_xclient(struct txn *t)
{
	const struct relay_msg *m = t->m;
	char addr[INET6_ADDRSTRLEN + 8] = "[UNAVAILABLE]", val[256];
	char ntop[INET6_ADDRSTRLEN];
	char attr[4][300], line[RELAY_CMD_MAX];
	uint32_t caps = t->c->xclient;
	struct reply rep;
	enum relay_io io;
	size_t na = 0, len, i;
	bool helo_ok = m->helo && m->helo[0] && strlen(m->helo) < 256 && safe_arg(m->helo, false);

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
	if (na == 0)
		return 0;
	t->step = "XCLIENT";
	for (i = 0; i < na;) {
		len = (size_t)snprintf(line, sizeof(line), "XCLIENT");
		while (i < na && len + 1 + strlen(attr[i]) + 2 <= RELAY_CMD_MAX)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s", attr[i++]);
		if ((io = put_cmd(t, "%s", line)) != IO_OK || (io = flush(t)) != IO_OK ||
		    (io = read_reply(t, t->r->timeout_ms, &rep, NULL)) != IO_OK) {
			fail_io(t, io);
			return -1;
		}
		if (rep.code / 100 != 2) {
			fail_session(t, &rep);
			return -1;
		}
	}
	io = hello(t, helo_ok ? m->helo : t->r->helo, &rep);
	if (io != IO_OK) {
		fail_io(t, io);
		return -1;
	}
	if (rep.code != 250) {
		fail_session(t, &rep);
		return -1;
	}
	return 0;
}

/* Counts one recipient's answer into the worst-wins rule. */
static void
tally(struct txn *t, const struct reply *rep)
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

/* MAIL and the RCPTs, pipelined in batches when offered. 0 when at least
 * one recipient was accepted and the rule lets the message go on. */
static int
send_envelope(struct txn *t)
{
	const struct relay_msg *m = t->m;
	uint32_t batch = t->c->caps & CAP_PIPELINING ? RELAY_PIPE_BATCH : 1;
	uint32_t sent = 0, got, i;
	bool mail_pending = true;
	struct reply rep;
	enum relay_io io;

	while (sent < m->nrcpts) {
		uint32_t first = sent;

		if (mail_pending)
			io = put_cmd(
				t, "MAIL FROM:<%s>%s%s", m->mail_from,
				m->body_8bit && (t->c->caps & CAP_8BITMIME) ? " BODY=8BITMIME" : "",
				m->smtputf8 && (t->c->caps & CAP_SMTPUTF8) ? " SMTPUTF8" : "");
		else
			io = IO_OK;
		/* Without PIPELINING, MAIL's reply comes before any RCPT. */
		for (i = 0;
		     io == IO_OK && i < batch && sent < m->nrcpts && !(mail_pending && batch == 1);
		     i++)
			io = put_cmd(t, "RCPT TO:<%s>", m->rcpts[sent++]);
		if (io == IO_OK)
			io = flush(t);
		t->step = mail_pending ? "MAIL" : "RCPT";
		if (io == IO_OK && mail_pending) {
			io = read_reply(t, t->r->timeout_ms, &rep, NULL);
			if (io == IO_OK && rep.code / 100 != 2) {
				fail_message(t, &rep);
				return -1;
			}
			mail_pending = false;
		}
		if (io == IO_OK)
			t->step = "RCPT";
		for (got = first; io == IO_OK && got < sent; got++) {
			io = read_reply(t, t->r->timeout_ms, &rep, NULL);
			if (io == IO_OK)
				tally(t, &rep);
		}
		if (io != IO_OK) {
			fail_io(t, io);
			return -1;
		}
	}
	if (t->n5 > 0 && t->n2 == 0) {
		fail_message(t, &t->first5);
		return -1;
	}
	if (t->n4 > 0 && t->n5 == 0) {
		/* Nothing is delivered yet: the retry will duplicate nothing. */
		fail_message(t, &t->first4);
		return -1;
	}
	return 0;
}

static enum relay_io
send_body(struct txn *t)
{
	const struct chunk *ch;
	enum relay_io io;

	t->bol = true;
	io = put_stuffed(t, (const uint8_t *)t->m->prefix, t->m->prefix_len);
	for (ch = t->m->body; io == IO_OK && ch; ch = ch->next)
		io = put_stuffed(t, ch->data, ch->len);
	/* SMTP cannot carry a message that does not end with CRLF: the
	 * downstream stores one more CRLF than we received. */
	if (io == IO_OK && !t->bol)
		io = put(t, "\r\n", 2);
	if (io == IO_OK)
		io = put(t, ".\r\n", 3);
	if (io == IO_OK)
		io = flush(t);
	return io;
}

/* After the dot: one reply (SMTP) or one per accepted recipient (LMTP). */
static int
read_final(struct txn *t)
{
	uint32_t i, accepted = t->n2, n = t->r->lmtp ? accepted : 1;
	struct reply rep;
	enum relay_io io;

	t->step = "end of data";
	t->n2 = t->n4 = 0; /* RCPT's 5xx stay counted */
	for (i = 0; i < n; i++) {
		io = read_reply(t, t->r->final_timeout_ms, &rep, NULL);
		if (io != IO_OK) {
			t->res->delivered = t->n2;
			fail_io(t, io);
			return -1;
		}
		tally(t, &rep);
	}
	if (!t->r->lmtp) {
		/* One reply for all the recipients accepted at RCPT. */
		if (rep.code / 100 != 2) {
			fail_message(t, &rep);
			return -1;
		}
		t->n2 = accepted;
	}
	t->res->delivered = t->n2;
	if (t->n5 > 0) {
		/* A refusal at RCPT time, or a recipient refused after the dot
		 * in LMTP: the message reached the others (see the top). */
		fail_message(t, &t->first5);
		return -1;
	}
	if (t->n4 > 0) {
		/* LMTP only: those that answered 2xx have it, and get it again
		 * when the sender retries. */
		fail_message(t, &t->first4);
		return -1;
	}
	set_result(t->res, 250, t->first2.enh[0] ? t->first2.enh : "2.0.0", "%s", t->first2.text);
	return 0;
}

/* The whole exchange on t->c. Returns 0 on success, -1 with t->res filled,
 * or 1 when a reused connection failed at RSET or XCLIENT, before any of
 * the message was sent (the caller retries on a fresh one). */
static int
transact(struct txn *t, bool reused)
{
	struct reply rep;
	enum relay_io io;

	t->n2 = t->n4 = t->n5 = 0;
	if (reused) {
		t->step = "RSET";
		if ((io = put_cmd(t, "RSET")) != IO_OK || (io = flush(t)) != IO_OK ||
		    (io = read_reply(t, t->r->timeout_ms, &rep, NULL)) != IO_OK ||
		    rep.code / 100 != 2)
			return 1;
	}
	/* A reused connection that refuses XCLIENT now may have let it be
	 * used once only: a fresh one is tried, none of the message sent. */
	if ((t->c->xclient & CAP_XCLIENT) && send_xclient(t) < 0)
		return reused ? 1 : -1;
	if (send_envelope(t) < 0)
		return -1;
	t->step = "DATA";
	if ((io = put_cmd(t, "DATA")) != IO_OK || (io = flush(t)) != IO_OK ||
	    (io = read_reply(t, t->r->timeout_ms, &rep, NULL)) != IO_OK) {
		fail_io(t, io);
		return -1;
	}
	if (rep.code != 354) {
		fail_message(t, &rep);
		return -1;
	}
	t->step = "message";
	if ((io = send_body(t)) != IO_OK) {
		fail_io(t, io);
		return -1;
	}
	return read_final(t);
}

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

int
relay_deliver(struct relay *r, const struct relay_msg *m, struct relay_result *res)
{
	struct txn t = { .r = r, .m = m, .res = res };
	int rc, attempt;

	memset(res, 0, sizeof(*res));
	if (!msg_ok(m)) {
		/* The engine never passes these: a bug of ours, so a 4xx. */
		set_result(res, 451, "4.3.0", "invalid envelope, not relayed");
		return -1;
	}
	for (attempt = 0;; attempt++) {
		bool reused = false;

		t.c = attempt == 0 ? pool_take(r) : NULL;
		if (t.c)
			reused = true;
		else if (conn_open(&t) < 0) {
			conn_close(t.c, false);
			rc = -1;
			break;
		}
		rc = transact(&t, reused);
		if (rc == 1) {
			/* Dead before the message began: once more, fresh. */
			conn_close(t.c, false);
			continue;
		}
		if (rc == 0)
			pool_give(r, t.c);
		else
			conn_close(t.c, false);
		break;
	}
	return rc == 0 ? 0 : -1;
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

struct relay *
relay_create(const struct relay_params *p, char *err, size_t errlen)
{
	struct relay *r = calloc(1, sizeof(*r));

	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
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
	r->timeout_ms = p->timeout_ms ? p->timeout_ms : RELAY_TIMEOUT_DEF;
	r->final_timeout_ms = p->final_timeout_ms ? p->final_timeout_ms : r->timeout_ms;
	r->idle_max_ms = p->idle_max_ms ? p->idle_max_ms : RELAY_IDLE_DEF;
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		snprintf(err, errlen, "relay: cannot create a mutex");
		goto fail;
	}
	r->lock_ok = true;
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
	while (r->idle) {
		struct relay_conn *c = r->idle;

		r->idle = c->next;
		conn_close(c, true);
	}
	if (r->lock_ok)
		pthread_mutex_destroy(&r->lock);
	free(r);
}
