/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp.c — the SMTP protocol engine: bytes in, replies and verdict
 * requests out.
 *
 * Why it is shaped this way:
 * - It runs on DPDK worker cores, so it never blocks and never allocates:
 *   the session is one fixed-size object, bodies and recipient lists go into
 *   chunks the worker lends, held input and queued output have fixed caps.
 * - Memory follows activity: the session itself is small (state, HELO
 *   name, the transaction), and its in-flight bytes (queued replies, held
 *   input, the command line) live in a buffer the worker lends only while
 *   there are any (buf_attach() / buf_release()). An idle session holds
 *   none, so a worker holds many idle sessions and few buffers. Without a
 *   buffer the session waits rather than loses anything: feed() takes no
 *   byte (TCP ACKs none), the greeting waits, and writable() resumes.
 * - Replies leave in command order (RFC 2920). A command whose reply
 *   depends on the control plane parks the session (s->waiting); nothing
 *   behind it is parsed until the verdict comes, so later replies cannot
 *   overtake it. Input that arrives meanwhile is held up to max_pending_in,
 *   and smtp_session_rcv_space() reports the room left, which the TCP engine
 *   turns into its receive window.
 * - Every reader is resumable: the command line reader, the DATA scanner
 *   (smtp_body.c) and the BDAT counter keep their state in the session, so
 *   input may stop at any byte.
 * - One table (smtp_cmds[]) drives dispatch; enter_state() is the only
 *   place the state changes; each verdict stage has one handler.
 * - Bad input is an answered, counted event: every 4xx/5xx counts toward
 *   max_errors, after which the session ends with 421 4.7.0.
 * - A peer's FIN ends its input, not our replies: senders half-close after
 *   their last command and read on, so everything received is answered
 *   before the session closes (input_ended()).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dataplane/smtp.h"
#include "dataplane/smtp_addr.h"
#include "dataplane/smtp_body.h"

#define SMTP_OUT_CAP      4096u               /* queued reply bytes */
#define SMTP_REPLY_ROOM   1024u               /* free output needed to run one command */
#define SMTP_LINE_MAX     512u                /* one reply line, with CRLF (4.5.3.1.5) */
#define SMTP_VERDICT_TEXT 400u                /* verdict text clipped to this */
#define SMTP_CHUNK_MIN    (SMTP_PATH_MAX + 1) /* any recipient fits one */
#define SMTP_MAGIC        0x534d5450u

/* The open transaction: MAIL accepted until its end. */
struct txn {
	bool active;
	bool smtputf8;
	enum smtp_body_type body_type;
	uint32_t flags; /* TXREC_F_* */
	uint32_t nrcpts;
	uint64_t size_param;
	uint64_t body_size;
	struct chunk *rcpt_head, *rcpt_tail;
	struct chunk *body_head, *body_tail;
	bool chains_kept;        /* the glue keeps them (keep_message) */
	struct smtp_hdr_end hdr; /* where the body's header block ends */
	bool hdr_told;           /* ops->headers was called */
	bool body_lent;          /* ...and lent the chain: body_release */
	uint32_t final_told;     /* the last count given to body_final */
				 /* MAIL FROM's path is in the session buffer (buf->mail_from): a
	 * session keeps its buffer while a transaction is open. */
};

/* A reply decided before the bytes it answers have all arrived (BDAT). */
struct late_reply {
	uint16_t code;
	const char *enh;
	const char *text;
};

struct smtp_session {
	uint32_t magic;
	uint8_t state; /* enum smtp_state, via enter_state() */
	const struct smtp_params *params;
	const struct smtp_ops *ops;
	void *ctx;
	const struct smtp_peer *peer;

	/* Effective limits: params with defaults and caps applied. */
	uint32_t max_cmd_line, max_text_line, max_rcpts, max_errors, max_pending;
	uint64_t max_msg;

	/* Command line reader. */
	uint32_t line_len;
	bool line_cr;   /* a CR waits for its LF */
	bool line_bare; /* a bare CR inside the line */
	bool line_long;

	/* Body readers. */
	struct smtp_body body;
	uint64_t bdat_left; /* chunk bytes still to read */
	uint64_t bdat_size;
	bool bdat_last;
	bool bdat_discard; /* read and drop, then bdat_refusal */
	struct late_reply bdat_refusal;

	/* The verdict being waited for. */
	bool waiting;
	uint8_t wait_stage;
	uint32_t token;
	uint32_t next_token;

	bool pregreet;
	bool peer_eof; /* the peer's FIN: no more input */
	bool recorded; /* the session record went out */
	bool helo_seen;
	bool tls;        /* STARTTLS done: not offered again */
	bool tls_switch; /* the 220 to STARTTLS is queued */
	uint64_t tls_discarded;
	uint32_t errors;
	uint32_t stale;
	uint32_t chunks_held;

	uint16_t replies[TXREC_REPLIES];
	uint32_t nreplies, replies_dropped;

	struct txn txn;
	char helo[SMTP_DOMAIN_MAX + 1];

	/* What is in flight lives in the lent buffer; these say how much. */
	uint32_t out_off, out_len;
	uint32_t pend_len;
	struct smtp_buf *buf; /* NULL while nothing is in flight */
	bool start_wanted;    /* start() found no buffer: writable() retries */
	uint32_t buf_waits;   /* times buf_get came back empty */
};

/*
 * The buffers of a session with bytes in flight: queued replies, input held
 * behind a verdict, the command line being read, the recipient being asked
 * about, and the open transaction's sender. Lent by ops->buf_get while the session has any of them and given
 * back when it has none (buf_release()), so an idle session is only the
 * struct above.
 */
struct smtp_buf {
	char out[SMTP_OUT_CAP];
	uint8_t pend[SMTP_PENDING_CAP];
	char line[SMTP_CMD_LINE_CAP + 1];
	char cur_rcpt[SMTP_PATH_MAX + 1];
	char mail_from[SMTP_PATH_MAX + 1]; /* of the open transaction */
};

static const char *const state_names[SMTP_ST_COUNT] = {
	[SMTP_ST_NEW] = "new",           [SMTP_ST_CONNECT] = "connect",
	[SMTP_ST_REJECTED] = "rejected", [SMTP_ST_GREETED] = "greeted",
	[SMTP_ST_READY] = "ready",       [SMTP_ST_MAIL] = "mail",
	[SMTP_ST_RCPT] = "rcpt",         [SMTP_ST_DATA] = "data",
	[SMTP_ST_BDAT] = "bdat",         [SMTP_ST_CLOSING] = "closing",
	[SMTP_ST_CLOSED] = "closed",
};

const char *
smtp_state_name(int state)
{
	return state >= 0 && state < SMTP_ST_COUNT ? state_names[state] : "?";
}

const char *
smtp_stage_name(int stage)
{
	static const char *const names[SMTP_STAGE_COUNT] = {
		[SMTP_STAGE_CONNECT] = "CONNECT",
		[SMTP_STAGE_MAIL] = "MAIL",
		[SMTP_STAGE_RCPT] = "RCPT",
		[SMTP_STAGE_DATA_END] = "DATA_END",
	};

	return stage >= 0 && stage < SMTP_STAGE_COUNT ? names[stage] : "?";
}

size_t
smtp_session_size(void)
{
	return sizeof(struct smtp_session);
}

size_t
smtp_buf_size(void)
{
	return sizeof(struct smtp_buf);
}

/* The session's buffer, borrowed if it has none; false when none is to be
 * had (the caller stops: nothing is taken or written until writable()). */
static bool
buf_attach(struct smtp_session *s)
{
	if (s->buf != NULL)
		return true;
	s->buf = s->ops->buf_get(s->ctx);
	if (s->buf == NULL) {
		s->buf_waits++;
		return false;
	}
	return true;
}

/* Gives the buffer back once nothing in it is needed: every reply written
 * to TCP, no input held, no partial command line, no verdict awaited (its
 * reply and the recipient asked about need it), no STARTTLS switch pending,
 * no transaction open (its MAIL FROM is there); or once the session is
 * closed. Called as each entry point returns. */
static void
buf_release(struct smtp_session *s)
{
	if (s->buf == NULL)
		return;
	if (s->state != SMTP_ST_CLOSED && (s->out_len > 0 || s->pend_len > 0 || s->line_len > 0 ||
					   s->waiting || s->tls_switch || s->txn.active))
		return;
	s->ops->buf_put(s->ctx, s->buf);
	s->buf = NULL;
}

int
smtp_session_state(const struct smtp_session *s)
{
	return s->state;
}

static void
enter_state(struct smtp_session *s, enum smtp_state st)
{
	/* Once closing, only closed may follow: a handler that finishes after
	 * a 421 must not revive the session. */
	if (s->state >= SMTP_ST_CLOSING && st < s->state)
		return;
	s->state = (uint8_t)st;
}

/* ---------------------------------------------------------------- output */

static void flush(struct smtp_session *s);
static void go_closing(struct smtp_session *s);

static uint32_t
out_free(const struct smtp_session *s)
{
	return SMTP_OUT_CAP - (s->out_len - s->out_off);
}

/* True when one of the eight bytes of w is a control character (below
 * 0x20, or 0x7f). Exact: a byte below 0x20 borrows into its own top bit
 * only, and ~w leaves out bytes whose top bit was set already; 0x7f is the
 * zero byte of w ^ 0x7f..7f. */
static inline bool
word_has_ctl(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull, tops = ones * 0x80;
	uint64_t del = w ^ ones * 0x7f;

	return (((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & tops;
}

/* True when p holds a control character: a word at a time, as blank_ctl(). */
static bool
has_ctl(const char *p, size_t n)
{
	size_t i;
	uint64_t w;

	if (n < 8) {
		for (i = 0; i < n; i++)
			if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
				return true;
		return false;
	}
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		if (word_has_ctl(w))
			return true;
	}
	memcpy(&w, p + n - 8, 8); /* the last eight bytes, overlapping */
	return word_has_ctl(w);
}

static void
blank_ctl_bytes(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch < 0x20 || ch == 0x7f)
			p[i] = ' ';
	}
}

/* Any control character of p blanked, eight bytes at a time: text is
 * normally clean, so each word is tested and only a word that has one is
 * gone through byte by byte. */
static void
blank_ctl(char *p, size_t n)
{
	size_t i;
	uint64_t w;

	if (n < 8) {
		blank_ctl_bytes(p, n);
		return;
	}
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		if (word_has_ctl(w))
			blank_ctl_bytes(p + i, 8);
	}
	if (i < n) { /* the last eight bytes, overlapping what was done */
		memcpy(&w, p + n - 8, 8);
		if (word_has_ctl(w))
			blank_ctl_bytes(p + n - 8, 8);
	}
}

/* Lays one reply line at d (room bytes, at least 16, at most
 * SMTP_LINE_MAX); returns its length. Clipped, never overflowing. */
static size_t
line_format(char *d, size_t room, uint16_t code, char sep, const char *enh, const char *text,
	    size_t tlen)
{
	uint32_t c = code, hundreds = c / 100u, tens = c / 10u;
	size_t k, i;

	/* "250-2.0.0 ": by hand, not snprintf, on every reply of the hot path;
	 * unsigned, so that the divisions by constants are multiplications. */
	d[0] = (char)('0' + hundreds % 10u);
	d[1] = (char)('0' + tens - hundreds * 10u);
	d[2] = (char)('0' + c - tens * 10u);
	d[3] = sep;
	k = 4;
	if (enh) {
		for (i = 0; enh[i] && i < 9; i++) /* x.yyy.zzz at most */
			d[k++] = enh[i];
		d[k++] = ' ';
	}
	/* Text from the control plane is clipped and kept to one line: copied
	 * whole, then any control character blanked in place. */
	if (tlen > room - 2 - k)
		tlen = room - 2 - k;
	memcpy(d + k, text, tlen);
	blank_ctl(d + k, tlen);
	k += tlen;
	d[k++] = '\r';
	d[k++] = '\n';
	return k;
}

/* Appends one reply line to the queued output (the buffer is attached). */
static void
out_line(struct smtp_session *s, uint16_t code, char sep, const char *enh, const char *text,
	 size_t tlen)
{
	size_t room;

	if (s->out_off > 0 && SMTP_OUT_CAP - s->out_len < SMTP_LINE_MAX) {
		memmove(s->buf->out, s->buf->out + s->out_off, s->out_len - s->out_off);
		s->out_len -= s->out_off;
		s->out_off = 0;
	}
	room = SMTP_OUT_CAP - s->out_len;
	if (room < 16)
		return;
	if (room > SMTP_LINE_MAX)
		room = SMTP_LINE_MAX;
	s->out_len += (uint32_t)line_format(
		s->buf->out + s->out_len, room, code, sep, enh, text, tlen);
}

/* Appends bytes of our own making, whole lines, to the queued output (the
 * buffer is attached; a command runs only with SMTP_REPLY_ROOM free). */
static void
out_bytes(struct smtp_session *s, const char *p, size_t n)
{
	if (s->out_off > 0 && SMTP_OUT_CAP - s->out_len < n) {
		memmove(s->buf->out, s->buf->out + s->out_off, s->out_len - s->out_off);
		s->out_len -= s->out_off;
		s->out_off = 0;
	}
	if (SMTP_OUT_CAP - s->out_len < n)
		return;
	memcpy(s->buf->out + s->out_len, p, n);
	s->out_len += (uint32_t)n;
}

static void
log_reply(struct smtp_session *s, uint16_t code)
{
	if (s->nreplies < TXREC_REPLIES)
		s->replies[s->nreplies++] = code;
	else
		s->replies_dropped++;
}

/* Counts errors: every 4xx/5xx but 421, which closes anyway. */
static void
count_error(struct smtp_session *s, uint16_t code)
{
	if (code >= 400 && code != 421 && s->state < SMTP_ST_CLOSING)
		s->errors++;
}

/*
 * Past max_errors the session ends with 421 4.7.0. Checked once a command
 * (or a verdict) has been fully handled, so that its own reply and record
 * come first.
 */
static void
error_limit(struct smtp_session *s)
{
	char text[SMTP_DOMAIN_MAX + 64];
	int n;

	if (s->errors < s->max_errors || s->state >= SMTP_ST_CLOSING || s->waiting)
		return;
	n = snprintf(text, sizeof(text), "%s Error: too many errors", s->params->hostname);
	out_line(s, 421, ' ', "4.7.0", text, (size_t)n);
	log_reply(s, 421);
	go_closing(s);
}

static void
reply_text(struct smtp_session *s, uint16_t code, const char *enh, const char *text, size_t tlen)
{
	out_line(s, code, ' ', enh, text, tlen);
	log_reply(s, code);
	count_error(s, code);
}

static void reply(struct smtp_session *s, uint16_t code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
reply(struct smtp_session *s, uint16_t code, const char *enh, const char *fmt, ...)
{
	char text[SMTP_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	reply_text(s, code, enh, text, (size_t)n);
}

/*
 * The 220 to STARTTLS is all written: from here every byte is TLS. RFC 3207
 * 4.2: the session starts over, forgetting what the client said before
 * (its EHLO); STARTTLS is not offered again.
 */
static void
tls_start_over(struct smtp_session *s)
{
	s->tls_switch = false;
	s->tls = true;
	s->helo_seen = false;
	s->helo[0] = '\0';
	enter_state(s, SMTP_ST_GREETED);
	s->ops->tls_begin(s->ctx);
}

static void
flush(struct smtp_session *s)
{
	uint32_t left = s->out_len - s->out_off, w;

	if (left > 0 && s->state != SMTP_ST_CLOSED) {
		w = s->ops->write(s->ctx, s->buf->out + s->out_off, left);
		s->out_off += w < left ? w : left;
	}
	if (s->out_off == s->out_len)
		s->out_off = s->out_len = 0;
	if (s->tls_switch && s->out_len == 0 && s->state < SMTP_ST_CLOSING)
		tls_start_over(s);
	if (s->state == SMTP_ST_CLOSING && s->out_len == 0) {
		enter_state(s, SMTP_ST_CLOSED);
		s->ops->close(s->ctx);
	}
}

/* ---------------------------------------------------------------- chunks */

static struct chunk *
chunk_new(struct smtp_session *s)
{
	struct chunk *c;
	uint32_t cap = 0;
	void *m = s->ops->chunk_get(s->ctx, &cap);

	if (m == NULL)
		return NULL;
	if (cap < sizeof(*c) + SMTP_CHUNK_MIN) {
		s->ops->chunk_put(s->ctx, m);
		return NULL;
	}
	c = m;
	c->next = NULL;
	c->len = 0;
	c->cap = cap - (uint32_t)sizeof(*c);
	s->chunks_held++;
	return c;
}

static void
chain_put(struct smtp_session *s, struct chunk **head, struct chunk **tail)
{
	struct chunk *c = *head, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		s->ops->chunk_put(s->ctx, c);
		s->chunks_held--;
	}
	*head = *tail = NULL;
}

/* Ensures n contiguous bytes at the tail of a chain. */
static bool
chain_room(struct smtp_session *s, struct chunk **head, struct chunk **tail, uint32_t n)
{
	struct chunk *c;

	if (*tail != NULL && (*tail)->cap - (*tail)->len >= n)
		return true;
	c = chunk_new(s);
	if (c == NULL)
		return false;
	if (*tail != NULL)
		(*tail)->next = c;
	else
		*head = c;
	*tail = c;
	return true;
}

/* ----------------------------------------------------------- transaction */

static void
emit_record(struct smtp_session *s, enum txrec_kind kind, uint32_t flags)
{
	struct smtp_record r = {
		.smtp = {
			.kind = (uint8_t)kind,
			.nreplies = s->nreplies,
			.replies_dropped = s->replies_dropped,
			.flags = flags | (s->pregreet ? TXREC_F_PREGREET : 0),
			.errors = s->errors,
			.stale_verdicts = s->stale,
		},
		.peer = s->peer,
		.helo = s->helo,
	};

	memcpy(r.smtp.replies, s->replies, s->nreplies * sizeof(s->replies[0]));
	if (kind == TXREC_TRANSACTION) {
		r.mail_from = s->buf->mail_from;
		r.rcpts = s->txn.rcpt_head;
		r.smtp.nrcpts = s->txn.nrcpts;
		r.smtp.size = s->txn.body_size;
		r.body = s->txn.body_head;
		r.smtp.flags |= s->txn.flags;
	}
	if (s->ops->record != NULL)
		s->ops->record(s->ctx, &r);
	s->nreplies = 0;
	s->replies_dropped = 0;
}

/* Forgets a chain the glue keeps: no longer ours, not given back. */
static void
chain_forget(struct smtp_session *s, struct chunk **head, struct chunk **tail)
{
	const struct chunk *c;

	for (c = *head; c != NULL; c = c->next)
		s->chunks_held--;
	*head = *tail = NULL;
}

/* Gives the body chain back: to the reader it was lent to, whole, or to
 * the budget chunk by chunk. */
static void
body_put(struct smtp_session *s)
{
	struct txn *t = &s->txn;
	struct chunk *head = t->body_head;

	if (!t->body_lent || head == NULL) {
		chain_put(s, &t->body_head, &t->body_tail);
		return;
	}
	chain_forget(s, &t->body_head, &t->body_tail);
	t->body_lent = false;
	s->ops->body_release(s->ctx, head);
}

static void
txn_clear(struct smtp_session *s)
{
	if (s->txn.chains_kept) {
		chain_forget(s, &s->txn.rcpt_head, &s->txn.rcpt_tail);
		chain_forget(s, &s->txn.body_head, &s->txn.body_tail);
	}
	chain_put(s, &s->txn.rcpt_head, &s->txn.rcpt_tail);
	body_put(s);
	memset(&s->txn, 0, sizeof(s->txn));
}

/* Ends the open transaction, if any: record it, give its memory back. */
static void
txn_end(struct smtp_session *s, uint32_t flags)
{
	if (s->txn.active)
		emit_record(s, TXREC_TRANSACTION, flags);
	txn_clear(s);
	enter_state(s, s->helo_seen ? SMTP_ST_READY : SMTP_ST_GREETED);
}

/*
 * The session record, once, with an open transaction recorded first.
 * keep_chains: a check is still out, and the control plane may be reading
 * the recipient and body chains it was given; they stay until fini.
 */
static void
session_end(struct smtp_session *s, bool keep_chains)
{
	if (s->recorded)
		return;
	if (s->txn.active)
		emit_record(s, TXREC_TRANSACTION, TXREC_F_ABORTED);
	if (keep_chains)
		s->txn.active = false;
	else
		txn_clear(s);
	emit_record(s, TXREC_SESSION, 0);
	s->recorded = true;
}

static void
go_closing(struct smtp_session *s)
{
	bool asked = s->waiting;

	enter_state(s, SMTP_ST_CLOSING);
	s->waiting = false;
	s->bdat_left = 0;
	s->pend_len = 0;
	session_end(s, asked);
}

/* The header block is in, the first len bytes of a clean body chain. */
static void
headers_told(struct smtp_session *s, uint64_t len)
{
	struct txn *t = &s->txn;

	if (t->hdr_told)
		return;
	t->hdr_told = true;
	if (s->ops->headers != NULL && s->ops->body_release != NULL && t->body_head != NULL &&
	    len <= UINT32_MAX)
		t->body_lent = s->ops->headers(s->ctx, t->body_head, (uint32_t)len);
}

/* The lent chain grew by a chunk: the bytes before its tail are final. */
static void
final_told(struct smtp_session *s)
{
	struct txn *t = &s->txn;
	uint64_t fixed = t->body_size - t->body_tail->len;

	if (s->ops->body_final == NULL || fixed <= t->final_told || fixed > UINT32_MAX)
		return;
	t->final_told = (uint32_t)fixed;
	s->ops->body_final(s->ctx, t->final_told);
}

/* Body bytes from the scanners; kept until a limit or an error. */
static void
body_sink(void *arg, const uint8_t *p, uint32_t n)
{
	struct smtp_session *s = arg;
	struct txn *t = &s->txn;
	uint32_t hdr = SMTP_HDR_END_NONE;
	uint64_t at = t->body_size;

	t->body_size += n;
	if (t->flags & (TXREC_F_TOO_BIG | TXREC_F_NO_MEM))
		return;
	if (s->body.flags != 0) {
		/* Doomed (bare CR/LF, long line): give the budget back now
		 * rather than at the end of a possibly huge body. */
		body_put(s);
		return;
	}
	if (t->body_size > s->max_msg) {
		/* Never buffer past the limit: drop what we have now. */
		t->flags |= TXREC_F_TOO_BIG;
		body_put(s);
		return;
	}
	if (!t->hdr_told)
		hdr = smtp_hdr_end_scan(&t->hdr, p, n);
	while (n > 0) {
		uint32_t k;

		if (!chain_room(s, &t->body_head, &t->body_tail, 1)) {
			t->flags |= TXREC_F_NO_MEM;
			body_put(s);
			return;
		}
		k = t->body_tail->cap - t->body_tail->len;
		if (k > n)
			k = n;
		memcpy(t->body_tail->data + t->body_tail->len, p, k);
		t->body_tail->len += k;
		p += k;
		n -= k;
	}
	if (t->body_lent)
		final_told(s);
	if (hdr != SMTP_HDR_END_NONE)
		headers_told(s, at + hdr);
}

/* The reply owed for a body that broke a rule; false when it is clean. */
static bool
body_refusal(struct smtp_session *s, struct late_reply *r)
{
	struct txn *t = &s->txn;

	if (s->body.flags & SMTP_BODY_BARE_LF) {
		t->flags |= TXREC_F_BARE_NL;
		*r = (struct late_reply){ 550, "5.5.2", "Message contains bare LF" };
	} else if (s->body.flags & SMTP_BODY_BARE_CR) {
		t->flags |= TXREC_F_BARE_NL;
		*r = (struct late_reply){ 550, "5.5.2", "Message contains bare CR" };
	} else if (s->body.flags & SMTP_BODY_LONG_LINE) {
		t->flags |= TXREC_F_LONG_LINE;
		*r = (struct late_reply){ 500, "5.5.6", "Error: message line too long" };
	} else if (t->flags & TXREC_F_TOO_BIG) {
		*r = (struct late_reply){ 552, "5.3.4", "Error: message file too big" };
	} else if (t->flags & TXREC_F_NO_MEM) {
		*r = (struct late_reply){ 452, "4.3.1", "Insufficient system storage" };
	} else {
		return false;
	}
	return true;
}

/* -------------------------------------------------------------- verdicts */

static void verdict_connect(struct smtp_session *s, uint16_t code, const char *enh,
			    const char *text, size_t tlen);
static void verdict_mail(struct smtp_session *s, uint16_t code, const char *enh, const char *text,
			 size_t tlen);
static void verdict_rcpt(struct smtp_session *s, uint16_t code, const char *enh, const char *text,
			 size_t tlen);
static void verdict_data_end(struct smtp_session *s, uint16_t code, const char *enh,
			     const char *text, size_t tlen);

/* One handler per stage; code 0 means "give your own reply". */
static void (*const verdict_handlers[SMTP_STAGE_COUNT])(struct smtp_session *, uint16_t,
							const char *, const char *, size_t) = {
	[SMTP_STAGE_CONNECT] = verdict_connect,
	[SMTP_STAGE_MAIL] = verdict_mail,
	[SMTP_STAGE_RCPT] = verdict_rcpt,
	[SMTP_STAGE_DATA_END] = verdict_data_end,
};

/* RFC 3463: class "." 1*3digit "." 1*3digit, class matching the code. */
static bool
enh_valid(const char *e, uint16_t code)
{
	uint32_t i = 0, part, digits;

	if (e[0] != (char)('0' + code / 100) || e[1] != '.')
		return false;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (digits = 0; e[i] >= '0' && e[i] <= '9'; i++)
			digits++;
		if (digits == 0 || digits > 3)
			return false;
		if (part == 0 && e[i++] != '.')
			return false;
	}
	return e[i] == '\0';
}

/* Applies a verdict: sanitises what the control plane sent, then the stage
 * handler replies. A code outside 2xx-5xx becomes a temporary failure, so a
 * bug of ours never bounces mail. */
static void
apply_verdict(struct smtp_session *s, enum smtp_stage stage, const struct smtp_verdict *v)
{
	static const char *const class_enh[6] = { "", "", "2.0.0", "4.0.0", "4.0.0", "5.0.0" };
	uint16_t code = v != NULL ? v->code : 0;
	const char *enh, *text = v != NULL ? v->text : NULL;
	char e[sizeof(v->enh)] = "";
	size_t tlen;

	if (code != 0 && (code < 200 || code > 599 || code / 100 == 3)) {
		code = 451;
		text = "Error: internal verdict error";
		memcpy(e, "4.3.0", 6);
	} else if (code != 0) {
		memcpy(e, v->enh, sizeof(e));
		e[sizeof(e) - 1] = '\0';
		if (!enh_valid(e, code))
			memcpy(e, class_enh[code / 100], 6);
	}
	enh = e;
	tlen = text != NULL ? strnlen(text, SMTP_VERDICT_TEXT) : 0;
	if (code != 0 && tlen == 0) {
		text = code < 400 ? "Ok" :
		       code < 500 ? "Error: try again later" :
				    "Error: rejected";
		tlen = strlen(text);
	}
	if (stage == SMTP_STAGE_DATA_END && v != NULL && v->keep_message)
		s->txn.chains_kept = true;
	verdict_handlers[stage](s, code, enh, text, tlen);
}

/* Asks the control plane; the reply comes from apply_verdict now or later.
 * The parser stops while s->waiting, which is what keeps replies in order. */
static void
ask(struct smtp_session *s, enum smtp_stage stage)
{
	struct smtp_verdict v = { 0 };
	struct smtp_check chk = {
		.stage = stage,
		.peer = s->peer,
		.helo = s->helo,
		.mail_from = s->buf->mail_from,
		.rcpts = s->txn.rcpt_head,
		.nrcpts = s->txn.nrcpts,
		.body = s->txn.body_head,
		.body_size = s->txn.body_size,
		.size_param = s->txn.size_param,
		.body_type = s->txn.body_type,
		.smtputf8 = s->txn.smtputf8,
	};

	if (stage == SMTP_STAGE_CONNECT)
		chk.mail_from = NULL;
	if (stage == SMTP_STAGE_RCPT)
		chk.rcpt = s->buf->cur_rcpt;
	if (++s->next_token == 0)
		s->next_token = 1;
	s->token = chk.token = s->next_token;
	if (s->ops->check != NULL) {
		s->waiting = true;
		s->wait_stage = (uint8_t)stage;
		if (s->ops->check(s->ctx, &chk, &v) == SMTP_CHECK_PENDING)
			return;
		s->waiting = false;
	}
	apply_verdict(s, stage, &v);
}

static void
verdict_connect(struct smtp_session *s, uint16_t code, const char *enh, const char *text,
		size_t tlen)
{
	if (code == 421) {
		reply_text(s, code, enh, text, tlen);
		go_closing(s);
	} else if (code >= 400) {
		/* RFC 5321 3.1: refuse, then wait for QUIT. */
		reply_text(s, code, enh, text, tlen);
		enter_state(s, SMTP_ST_REJECTED);
	} else if (s->pregreet && s->params->pregreet_reject) {
		reply(s, 554, "5.7.1", "%s Error: talked before greeting", s->params->hostname);
		enter_state(s, SMTP_ST_REJECTED);
	} else {
		/* RFC 2034: no enhanced code in the greeting. Copied, not
		 * formatted: every session is greeted. */
		char greeting[SMTP_DOMAIN_MAX + sizeof(" ESMTP")];
		size_t n = strlen(s->params->hostname);

		memcpy(greeting, s->params->hostname, n);
		memcpy(greeting + n, " ESMTP", 6);
		reply_text(s, 220, NULL, greeting, n + 6);
		enter_state(s, SMTP_ST_GREETED);
	}
}

/* Common shape of MAIL and RCPT verdicts; true when accepted. */
static bool
verdict_reply(struct smtp_session *s, uint16_t code, const char *enh, const char *text, size_t tlen,
	      uint16_t ok_code, const char *ok_enh)
{
	if (code == 0) {
		reply(s, ok_code, ok_enh, "Ok");
		return true;
	}
	reply_text(s, code, enh, text, tlen);
	if (code == 421)
		go_closing(s);
	return code < 400;
}

static void
verdict_mail(struct smtp_session *s, uint16_t code, const char *enh, const char *text, size_t tlen)
{
	if (verdict_reply(s, code, enh, text, tlen, 250, "2.1.0") && s->state == SMTP_ST_READY) {
		s->txn.active = true;
		enter_state(s, SMTP_ST_MAIL);
	} else if (!s->txn.active) {
		txn_clear(s);
	}
}

static void
verdict_rcpt(struct smtp_session *s, uint16_t code, const char *enh, const char *text, size_t tlen)
{
	struct txn *t = &s->txn;
	uint32_t n = (uint32_t)strlen(s->buf->cur_rcpt) + 1;

	if (!verdict_reply(s, code, enh, text, tlen, 250, "2.1.5") || s->state >= SMTP_ST_CLOSING)
		return;
	/* do_rcpt reserved the room before asking. */
	memcpy(t->rcpt_tail->data + t->rcpt_tail->len, s->buf->cur_rcpt, n);
	t->rcpt_tail->len += n;
	t->nrcpts++;
	enter_state(s, SMTP_ST_RCPT);
}

static void
verdict_data_end(struct smtp_session *s, uint16_t code, const char *enh, const char *text,
		 size_t tlen)
{
	if (code == 0) {
		reply(s, 250, "2.0.0", "Ok: queued");
		code = 250;
	} else {
		reply_text(s, code, enh, text, tlen);
	}
	txn_end(s, code < 400 ? TXREC_F_DELIVERED : 0);
	if (code == 421)
		go_closing(s);
}

/* -------------------------------------------------------------- commands */

#define CMD_VERB_MAX 8 /* STARTTLS, the longest verb */

struct smtp_cmd {
	char verb[CMD_VERB_MAX + 1]; /* upper case, zero-padded: read as one word */
	uint16_t states;             /* bit per enum smtp_state allowed */
	uint8_t flags;
	void (*fn)(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len);
	const char *syntax;   /* for 501 5.5.4 */
	const char *seq_idle; /* 503 text outside a transaction */
	const char *seq_txn;  /* 503 text inside one */
};

#define CMD_NEED_ARG 0x01u
#define CMD_NO_ARG   0x02u
#define CMD_NOT_IMPL 0x04u /* known verb, not offered: 502 5.5.1 */
#define CMD_LATE_SEQ 0x08u /* handler reports bad sequence (BDAT) */

#define ST(x)      (1u << SMTP_ST_##x)
#define ST_SESSION (ST(GREETED) | ST(READY) | ST(MAIL) | ST(RCPT) | ST(BDAT))

static void do_helo(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_mail(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_rcpt(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_data(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_bdat(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_rset(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_noop(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_quit(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_vrfy(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_help(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);
static void do_starttls(struct smtp_session *, const struct smtp_cmd *, char *, uint32_t);

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO", ST_SESSION, CMD_NEED_ARG, do_helo, "EHLO hostname", NULL, NULL },
	{ "HELO", ST_SESSION, CMD_NEED_ARG, do_helo, "HELO hostname", NULL, NULL },
	{ "MAIL", ST(READY), CMD_NEED_ARG, do_mail, "MAIL FROM:<address>", NULL,
	  "Error: nested MAIL command" },
	{ "RCPT", ST(MAIL) | ST(RCPT), CMD_NEED_ARG, do_rcpt, "RCPT TO:<address>",
	  "Error: need MAIL command", "Error: RCPT after BDAT" },
	{ "DATA", ST(MAIL) | ST(RCPT), CMD_NO_ARG, do_data, "DATA", "Error: need MAIL command",
	  "Error: DATA after BDAT" },
	{ "BDAT", ST(MAIL) | ST(RCPT) | ST(BDAT), CMD_NEED_ARG | CMD_LATE_SEQ, do_bdat,
	  "BDAT size [LAST]", "Error: need MAIL command", NULL },
	{ "RSET", ST_SESSION, CMD_NO_ARG, do_rset, "RSET", NULL, NULL },
	{ "NOOP", ST_SESSION, 0, do_noop, "NOOP", NULL, NULL },
	{ "QUIT", ST_SESSION | ST(REJECTED), CMD_NO_ARG, do_quit, "QUIT", NULL, NULL },
	{ "VRFY", ST_SESSION, CMD_NEED_ARG, do_vrfy, "VRFY address", NULL, NULL },
	{ "HELP", ST_SESSION, 0, do_help, "HELP", NULL, NULL },
	{ "EXPN", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
	{ "TURN", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
	{ "ETRN", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
	{ "ATRN", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
	{ "AUTH", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
	{ "STARTTLS", ST(READY), CMD_NO_ARG, do_starttls, "STARTTLS", NULL,
	  "Error: MAIL transaction in progress" },
	{ "BURL", ST_SESSION, CMD_NOT_IMPL, NULL, NULL, NULL, NULL },
};

/* Why cmd may not run now, or NULL when it may. */
static const char *
seq_refusal(const struct smtp_session *s, const struct smtp_cmd *cmd)
{
	if (cmd->states & (1u << s->state))
		return NULL;
	if (s->state == SMTP_ST_REJECTED)
		return "Error: access denied";
	if (s->state == SMTP_ST_GREETED)
		return "Error: send HELO/EHLO first";
	if (s->txn.active && cmd->seq_txn != NULL)
		return cmd->seq_txn;
	return cmd->seq_idle != NULL ? cmd->seq_idle : "Error: bad sequence";
}

/*
 * The verb as the table holds it: upper case, zero-padded to one 64-bit
 * word, so the lookup compares one word per row, with no string
 * function on the path of every command. Clearing bit 0x20 folds a-z to A-Z and turns no
 * other byte into a letter, so only a verb that differs from a row in
 * letter case alone can match it. 0 (never a row) for a verb longer than any
 * or holding a byte that folds to 0 (NUL), which would read as padding.
 */
static uint64_t
verb_key(const char *p, uint32_t n)
{
	char w[CMD_VERB_MAX] = { 0 };
	uint64_t k;

	if (n == 0 || n > CMD_VERB_MAX)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		w[i] = (char)(p[i] & ~0x20);
		if (w[i] == 0)
			return 0;
	}
	memcpy(&k, w, sizeof(k));
	return k;
}

static void
dispatch(struct smtp_session *s, char *line, uint32_t len)
{
	const struct smtp_cmd *cmd = NULL;
	uint32_t vlen = 0, a, i;
	uint64_t key;
	const char *why;

	while (vlen < len && line[vlen] != ' ')
		vlen++;
	for (a = vlen; a < len && line[a] == ' '; a++)
		;
	while (len > a && line[len - 1] == ' ')
		len--;
	line[len] = '\0';
	key = verb_key(line, vlen);
	for (i = 0; key != 0 && i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++) {
		uint64_t k;

		memcpy(&k, smtp_cmds[i].verb, sizeof(k));
		if (k == key) {
			cmd = &smtp_cmds[i];
			break;
		}
	}
	/* Refused at connect: only QUIT, and BDAT (whose bytes must still be
	 * read), get past this; everything else, even unknown verbs, is 503. */
	if (s->state == SMTP_ST_REJECTED &&
	    (cmd == NULL || !((cmd->states & ST(REJECTED)) || (cmd->flags & CMD_LATE_SEQ)))) {
		reply(s, 503, "5.5.1", "Error: access denied");
		return;
	}
	if (cmd == NULL) {
		reply(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
	if (!(cmd->flags & CMD_LATE_SEQ) && (why = seq_refusal(s, cmd))) {
		reply(s, 503, "5.5.1", "%s", why);
		return;
	}
	if (cmd->flags & CMD_NOT_IMPL) {
		reply(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (((cmd->flags & CMD_NEED_ARG) && a == len) || ((cmd->flags & CMD_NO_ARG) && a < len)) {
		reply(s, 501, "5.5.4", "Syntax: %s", cmd->syntax);
		return;
	}
	cmd->fn(s, cmd, line + a, len - a);
}

/*
 * RFC 5321 4.1.1.1: the hostname, then one extension per line; STARTTLS
 * while the session is not in TLS and a certificate is configured; no AUTH
 * (an MX takes no logins). The extension lines are ours and fixed but for
 * SIZE's number, so they are copied as one block rather than formatted line
 * by line: the EHLO reply is on every session's path.
 */
static void
ehlo_reply(struct smtp_session *s)
{
	static const char head[] = "250-PIPELINING\r\n250-SIZE ";
	static const char tail[] = "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"
				   "250 CHUNKING\r\n";
	static const char tail_tls[] = "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
				       "250-SMTPUTF8\r\n250-CHUNKING\r\n250 STARTTLS\r\n";
	char block[sizeof(head) - 1 + 20 + sizeof(tail_tls) - 1], digits[20];
	bool tls = s->params->tls_offer && !s->tls;
	size_t k = sizeof(head) - 1, m = 0;
	uint64_t v = s->max_msg;

	memcpy(block, head, k);
	do {
		digits[m++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	while (m > 0)
		block[k++] = digits[--m];
	memcpy(block + k, tls ? tail_tls : tail, tls ? sizeof(tail_tls) - 1 : sizeof(tail) - 1);
	k += tls ? sizeof(tail_tls) - 1 : sizeof(tail) - 1;
	out_line(s, 250, '-', NULL, s->params->hostname, strlen(s->params->hostname));
	out_bytes(s, block, k);
	log_reply(s, 250);
}

static void
do_helo(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	if (len > SMTP_DOMAIN_MAX) {
		reply(s, 501, "5.5.2", "Error: hostname too long");
		return;
	}
	if (has_ctl(arg, len)) {
		reply(s, 501, "5.5.2", "Error: invalid hostname");
		return;
	}
	/* RFC 5321 4.1.4: HELO/EHLO within a transaction acts as RSET. */
	if (s->txn.active)
		txn_end(s, TXREC_F_ABORTED);
	txn_clear(s);
	memcpy(s->helo, arg, len);
	s->helo[len] = '\0';
	s->helo_seen = true;
	enter_state(s, SMTP_ST_READY);
	if (cmd->verb[0] == 'H') {
		reply(s, 250, NULL, "%s", s->params->hostname);
		return;
	}
	ehlo_reply(s);
}

/* Matches "KEYWORD" case-insensitively at the start of arg. */
static bool
has_prefix(const char *arg, uint32_t len, const char *kw)
{
	size_t k = strlen(kw);

	return len >= k && strncasecmp(arg, kw, k) == 0;
}

/* esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 allows UTF-8 too. */
static bool
esmtp_value_ok(const char *v, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch < 33 || ch == '=' || ch == 127)
			return false;
	}
	return n > 0;
}

/* Parses a decimal of at most 20 digits; saturates instead of wrapping. */
static bool
parse_u64(const char *p, uint32_t n, uint64_t *out)
{
	uint64_t v = 0;
	uint32_t i;

	if (n == 0 || n > 20)
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		if (v > (UINT64_MAX - 9) / 10)
			v = UINT64_MAX;
		else
			v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return true;
}

/*
 * MAIL parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531).
 * Returns false after replying.
 */
static bool
mail_params(struct smtp_session *s, const char *p, uint32_t n)
{
	struct txn *t = &s->txn;
	bool seen_size = false;
	uint32_t i = 0;

	while (i < n) {
		uint32_t k0, klen, v0 = 0, vlen = 0;

		while (i < n && p[i] == ' ')
			i++;
		k0 = i;
		while (i < n && p[i] != ' ' && p[i] != '=')
			i++;
		klen = i - k0;
		if (i < n && p[i] == '=') {
			v0 = ++i;
			while (i < n && p[i] != ' ')
				i++;
			vlen = i - v0;
			if (!esmtp_value_ok(p + v0, vlen)) {
				reply(s, 501, "5.5.4", "Bad parameter syntax");
				return false;
			}
		}
		if (klen == 4 && has_prefix(p + k0, klen, "SIZE") && v0) {
			if (seen_size || !parse_u64(p + v0, vlen, &t->size_param)) {
				reply(s, 501, "5.5.4", "Bad SIZE syntax");
				return false;
			}
			seen_size = true;
		} else if (klen == 4 && has_prefix(p + k0, klen, "BODY") && v0) {
			enum smtp_body_type bt = SMTP_BODY_NONE;

			if (vlen == 4 && has_prefix(p + v0, vlen, "7BIT"))
				bt = SMTP_BODY_7BIT;
			else if (vlen == 8 && has_prefix(p + v0, vlen, "8BITMIME"))
				bt = SMTP_BODY_8BITMIME;
			if (bt == SMTP_BODY_NONE || t->body_type != SMTP_BODY_NONE) {
				reply(s, 501, "5.5.4", "Bad BODY keyword value");
				return false;
			}
			t->body_type = bt;
		} else if (klen == 8 && has_prefix(p + k0, klen, "SMTPUTF8") && !v0) {
			if (t->smtputf8) {
				reply(s, 501, "5.5.4", "Duplicate SMTPUTF8");
				return false;
			}
			t->smtputf8 = true;
		} else if (klen > 0) {
			reply(s, 555, "5.5.4", "Unsupported option: %.*s",
			      (int)(klen > 64 ? 64 : klen), p + k0);
			return false;
		}
	}
	if (t->size_param > s->max_msg) {
		reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return false;
	}
	return true;
}

/*
 * Parses "FROM:" or "TO:" and the path; on success *a describes it and
 * *rest points at what follows. Replies and returns false otherwise.
 */
static bool
parse_path_arg(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len,
	       const char *kw, unsigned flags, const char *enh, const char *who,
	       struct smtp_addr *a, uint32_t *rest)
{
	uint32_t i = (uint32_t)strlen(kw);
	enum smtp_addr_result r;

	if (!has_prefix(arg, len, kw)) {
		reply(s, 501, "5.5.4", "Syntax: %s", cmd->syntax);
		return false;
	}
	while (i < len && arg[i] == ' ') /* common, though not RFC 5321 */
		i++;
	r = smtp_addr_parse(arg + i, len - i, flags | SMTP_ADDR_UTF8, a);
	if (r == SMTP_ADDR_OK && i + a->path_len < len && arg[i + a->path_len] != ' ')
		r = SMTP_ADDR_SYNTAX;
	if (r == SMTP_ADDR_TOO_LONG) {
		reply(s, 501, enh, "Error: %s address too long", who);
		return false;
	}
	if (r != SMTP_ADDR_OK) {
		reply(s, 501, enh, "Error: bad %s address syntax", who);
		return false;
	}
	a->mbox_off += i;
	a->domain_off += i;
	*rest = i + a->path_len;
	return true;
}

static void
do_mail(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	struct smtp_addr a;
	uint32_t rest;

	if (!parse_path_arg(s, cmd, arg, len, "FROM:", SMTP_ADDR_NULL_OK, "5.1.7", "sender", &a,
			    &rest))
		return;
	txn_clear(s);
	if (!mail_params(s, arg + rest, len - rest)) {
		txn_clear(s);
		return;
	}
	if (a.non_ascii && !s->txn.smtputf8) {
		reply(s, 553, "5.6.7", "Error: SMTPUTF8 needed for this address");
		txn_clear(s);
		return;
	}
	memcpy(s->buf->mail_from, arg + a.mbox_off, a.mbox_len);
	s->buf->mail_from[a.mbox_len] = '\0';
	ask(s, SMTP_STAGE_MAIL);
}

static void
do_rcpt(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	struct txn *t = &s->txn;
	const struct smtp_params *pp = s->params;
	struct smtp_addr a;
	uint32_t rest;

	if (!parse_path_arg(s, cmd, arg, len, "TO:", SMTP_ADDR_POSTMASTER, "5.1.3", "recipient", &a,
			    &rest))
		return;
	while (rest < len && arg[rest] == ' ')
		rest++;
	if (rest < len) {
		/* No DSN offered: RCPT takes no parameters. */
		reply(s, 555, "5.5.4", "Unsupported option: %.*s",
		      (int)(len - rest > 64 ? 64 : len - rest), arg + rest);
		return;
	}
	if (a.non_ascii && !t->smtputf8) {
		reply(s, 553, "5.6.7", "Error: SMTPUTF8 needed for this address");
		return;
	}
	if (t->nrcpts >= s->max_rcpts) {
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	/* Never an open relay: a domain we are not MX for is refused here,
	 * before the control plane is even asked; so is a local part that
	 * names a further route ("a%b@", "a!b@", "\"a@b\"@"), which a
	 * downstream with the percent hack or bang paths would relay. */
	if (!a.is_postmaster &&
	    (a.routing || pp->domain_accepted == NULL ||
	     !pp->domain_accepted(pp->domain_arg, arg + a.domain_off, a.domain_len))) {
		reply(s, 550, "5.7.1", "Relaying denied");
		return;
	}
	if (!chain_room(s, &t->rcpt_head, &t->rcpt_tail, a.mbox_len + 1)) {
		reply(s, 452, "4.3.1", "Insufficient system storage");
		return;
	}
	memcpy(s->buf->cur_rcpt, arg + a.mbox_off, a.mbox_len);
	s->buf->cur_rcpt[a.mbox_len] = '\0';
	ask(s, SMTP_STAGE_RCPT);
}

static void
do_data(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	if (s->txn.nrcpts == 0) {
		reply(s, 554, "5.5.1", "Error: no valid recipients");
		return;
	}
	/* RFC 2034: no enhanced code on 3xx. */
	reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	smtp_body_begin(&s->body, true, s->max_text_line);
	smtp_hdr_end_begin(&s->txn.hdr);
	enter_state(s, SMTP_ST_DATA);
}

/* The end of a DATA body or of a BDAT chunk. */
static void
body_done(struct smtp_session *s, bool last)
{
	struct late_reply r;

	if (body_refusal(s, &r)) {
		/* The transaction is over (RFC 3030 4.2 for BDAT): later
		 * chunks in the pipeline meet "need MAIL" and are dropped. */
		reply(s, r.code, r.enh, "%s", r.text);
		txn_end(s, 0);
	} else if (last) {
		/* A message without an empty line is all header block. */
		if (s->txn.body_size > 0)
			headers_told(s, s->txn.body_size);
		ask(s, SMTP_STAGE_DATA_END);
	} else {
		reply(s, 250, "2.0.0", "Ok: %llu bytes", (unsigned long long)s->bdat_size);
	}
}

static void
bdat_chunk_done(struct smtp_session *s)
{
	if (s->bdat_discard) {
		s->bdat_discard = false;
		reply(s, s->bdat_refusal.code, s->bdat_refusal.enh, "%s", s->bdat_refusal.text);
		return;
	}
	if (s->bdat_last)
		smtp_body_end(&s->body);
	body_done(s, s->bdat_last);
}

static void
do_bdat(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	uint32_t n = 0;
	uint64_t size;
	const char *why;
	bool last = false;

	while (n < len && arg[n] != ' ')
		n++;
	if (n < len) {
		uint32_t k = n;

		while (k < len && arg[k] == ' ')
			k++;
		last = len - k == 4 && has_prefix(arg + k, 4, "LAST");
		if (!last)
			n = 0; /* force the syntax error below */
	}
	if (!parse_u64(arg, n, &size)) {
		/* No size, no framing: the bytes that follow are read as
		 * commands, as they must be when the size is unknown. */
		reply(s, 501, "5.5.4", "Syntax: %s", cmd->syntax);
		return;
	}
	s->bdat_size = size;
	s->bdat_left = size;
	s->bdat_last = last;
	why = seq_refusal(s, cmd);
	if (why != NULL || s->txn.nrcpts == 0) {
		/* The chunk is on its way whatever we say: read and drop it. */
		s->bdat_discard = true;
		s->bdat_refusal = why != NULL ? (struct late_reply){ 503, "5.5.1", why } :
						(struct late_reply){ 554, "5.5.1",
								     "Error: no valid recipients" };
	} else if (s->state != SMTP_ST_BDAT) {
		smtp_body_begin(&s->body, false, s->max_text_line);
		smtp_hdr_end_begin(&s->txn.hdr);
		enter_state(s, SMTP_ST_BDAT);
	}
	if (size == 0)
		bdat_chunk_done(s);
}

static void
do_rset(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	txn_end(s, TXREC_F_ABORTED);
	reply(s, 250, "2.0.0", "Ok");
}

static void
do_noop(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	reply(s, 250, "2.0.0", "Ok");
}

static void
do_quit(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	reply_text(s, 221, "2.0.0", "Bye", 3);
	go_closing(s);
}

static void
do_vrfy(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	/* RFC 5321 3.5.3: we cannot verify, and say so without lying. */
	reply(s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

/*
 * RFC 3207. The 220 goes out alone: whatever the client sent after the
 * command line, pipelined or injected, is dropped and counted, never read
 * as a command inside TLS (blocked() stops the parser; feed() and run()
 * drop the rest).
 */
static void
do_starttls(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	struct smtp_verdict v;

	(void)cmd, (void)arg, (void)len;
	if (!s->params->tls_offer || s->ops->starttls == NULL) {
		reply(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (s->tls) {
		reply(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	memset(&v, 0, sizeof(v));
	if (!s->ops->starttls(s->ctx, &v)) {
		uint16_t code = v.code >= 400 && v.code < 600 ? v.code : 454;
		const char *enh = enh_valid(v.enh, code) ? v.enh :
				  code / 100 == 5        ? "5.7.1" :
							   "4.7.0";
		const char *text = v.text ? v.text : "TLS not available due to local problem";

		reply_text(s, code, enh, text, strnlen(text, SMTP_VERDICT_TEXT));
		return;
	}
	reply(s, 220, "2.0.0", "Ready to start TLS");
	s->tls_switch = true;
}

static void
do_help(struct smtp_session *s, const struct smtp_cmd *cmd, char *arg, uint32_t len)
{
	(void)cmd, (void)arg, (void)len;
	reply(s, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
}

/* --------------------------------------------------------------- readers */

/* A complete command line (its LF consumed): answer or dispatch it. */
static void
line_done(struct smtp_session *s, bool bare_lf)
{
	if (s->line_long)
		reply(s, 500, "5.5.6", "Error: line too long");
	else if (bare_lf)
		reply(s, 500, "5.5.2", "Error: bare <LF> received");
	else if (s->line_bare)
		reply(s, 500, "5.5.2", "Error: bare <CR> received");
	else
		dispatch(s, s->buf->line, s->line_len);
	s->line_len = 0;
	s->line_cr = s->line_bare = s->line_long = false;
}

/* Reads command bytes up to and including one LF. */
static uint32_t
cmd_bytes(struct smtp_session *s, const uint8_t *p, uint32_t n)
{
	const uint8_t *lf = memchr(p, '\n', n);
	uint32_t m = lf != NULL ? (uint32_t)(lf - p) : n, i;
	uint32_t max = s->max_cmd_line - 2;
	uint32_t text = m > 0 && p[m - 1] == '\r' ? m - 1 : m;

	/* The usual case, copied whole: no CR waiting from before and none in
	 * the bytes but the one that may end them. */
	if (!s->line_cr && memchr(p, '\r', text) == NULL) {
		uint32_t room = max > s->line_len ? max - s->line_len : 0;
		uint32_t k = text < room ? text : room;

		memcpy(s->buf->line + s->line_len, p, k);
		s->line_len += k;
		if (k < text)
			s->line_long = true; /* the rest is skipped on to the LF */
		s->line_cr = text < m;
		m = 0; /* all taken: nothing left for the loop below */
	}
	for (i = 0; i < m; i++) {
		uint8_t ch = p[i];

		if (s->line_cr) {
			s->line_bare = true;
			s->line_cr = false;
		}
		if (ch == '\r') {
			s->line_cr = true;
			continue;
		}
		if (s->line_len < max)
			s->buf->line[s->line_len++] = (char)ch;
		else
			s->line_long = true; /* skip on to the LF */
	}
	if (lf == NULL)
		return n;
	line_done(s, !s->line_cr);
	return (uint32_t)(lf - p) + 1;
}

static uint32_t
data_bytes(struct smtp_session *s, const uint8_t *p, uint32_t n)
{
	uint32_t k = smtp_body_scan(&s->body, p, n, body_sink, s);

	if (s->body.done)
		body_done(s, true);
	return k;
}

static uint32_t
bdat_bytes(struct smtp_session *s, const uint8_t *p, uint32_t n)
{
	uint32_t k = s->bdat_left < n ? (uint32_t)s->bdat_left : n;

	if (!s->bdat_discard)
		smtp_body_scan(&s->body, p, k, body_sink, s);
	s->bdat_left -= k;
	if (s->bdat_left == 0)
		bdat_chunk_done(s);
	return k;
}

static bool
blocked(const struct smtp_session *s)
{
	return s->waiting || s->tls_switch || s->state <= SMTP_ST_CONNECT ||
	       s->state >= SMTP_ST_CLOSING || out_free(s) < SMTP_REPLY_ROOM;
}

/* Parses input until it runs out or the session must stop. */
static uint32_t
consume(struct smtp_session *s, const uint8_t *p, uint32_t n)
{
	uint32_t i = 0;

	while (i < n && !blocked(s)) {
		if (s->bdat_left > 0)
			i += bdat_bytes(s, p + i, n - i);
		else if (s->state == SMTP_ST_DATA)
			i += data_bytes(s, p + i, n - i);
		else
			i += cmd_bytes(s, p + i, n - i);
		error_limit(s);
	}
	return i;
}

/*
 * After the peer's FIN: once every command it sent has its reply (nothing
 * waits for a verdict, nothing is held), the session ends. A half-closing
 * sender still reads (RFC 5321 4.1.1.10: the server answers QUIT before it
 * closes), so the replies go out first and the close follows them. What was
 * incomplete at the FIN, a partial line or an unfinished body, is dropped
 * and its transaction recorded aborted.
 */
static void
input_ended(struct smtp_session *s)
{
	if (!s->peer_eof || s->waiting || s->pend_len > 0 || s->state == SMTP_ST_NEW ||
	    s->state >= SMTP_ST_CLOSING)
		return;
	go_closing(s);
	flush(s);
}

/* Works through held input as far as it can, flushing as it goes. */
static void
run(struct smtp_session *s)
{
	for (;;) {
		uint32_t k = 0;

		if (s->pend_len > 0 && !blocked(s)) {
			k = consume(s, s->buf->pend, s->pend_len);
			if (s->tls_switch) {
				s->tls_discarded += s->pend_len - k;
				s->pend_len = 0;
			}
			/* Closing drops held input (go_closing zeroed it). */
			if (s->state < SMTP_ST_CLOSING) {
				memmove(s->buf->pend, s->buf->pend + k, s->pend_len - k);
				s->pend_len -= k;
			}
		}
		if (s->state >= SMTP_ST_CLOSING)
			s->pend_len = 0;
		flush(s);
		if (k == 0 || s->pend_len == 0)
			break;
	}
	input_ended(s);
}

/* ------------------------------------------------------------ public API */

struct smtp_session *
smtp_session_init(void *mem, size_t memlen, const struct smtp_params *params,
		  const struct smtp_ops *ops, void *ctx, const struct smtp_peer *peer)
{
	struct smtp_session *s = mem;

	if (mem == NULL || memlen < sizeof(*s) || params == NULL || params->hostname == NULL ||
	    ops == NULL || ops->write == NULL || ops->close == NULL || ops->chunk_get == NULL ||
	    ops->chunk_put == NULL || ops->buf_get == NULL || ops->buf_put == NULL ||
	    peer == NULL || strlen(params->hostname) > SMTP_DOMAIN_MAX)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->magic = SMTP_MAGIC;
	s->params = params;
	s->ops = ops;
	s->ctx = ctx;
	s->peer = peer;
	s->max_cmd_line = params->max_cmd_line ? params->max_cmd_line : 512;
	if (s->max_cmd_line > SMTP_CMD_LINE_CAP)
		s->max_cmd_line = SMTP_CMD_LINE_CAP;
	if (s->max_cmd_line < 64)
		s->max_cmd_line = 64;
	s->max_text_line = params->max_text_line ? params->max_text_line : 1000;
	s->max_rcpts = params->max_rcpts ? params->max_rcpts : 100;
	s->max_msg = params->max_msg_size ? params->max_msg_size : 10u << 20;
	s->max_errors = params->max_errors ? params->max_errors : 20;
	s->max_pending = params->max_pending_in ? params->max_pending_in : SMTP_PENDING_CAP;
	if (s->max_pending > SMTP_PENDING_CAP)
		s->max_pending = SMTP_PENDING_CAP;
	enter_state(s, SMTP_ST_NEW);
	return s;
}

void
smtp_session_start(struct smtp_session *s)
{
	if (s->state != SMTP_ST_NEW)
		return;
	/* The greeting (or the refusal) needs room to be written. */
	if (!buf_attach(s)) {
		s->start_wanted = true;
		return;
	}
	s->start_wanted = false;
	enter_state(s, SMTP_ST_CONNECT);
	ask(s, SMTP_STAGE_CONNECT);
	error_limit(s);
	run(s);
	buf_release(s);
}

uint32_t
smtp_session_feed(struct smtp_session *s, const uint8_t *p, uint32_t n)
{
	uint32_t taken = 0, k;
	bool tls = s->tls;

	if (s->state >= SMTP_ST_CLOSING || s->peer_eof)
		return n;
	if (s->state <= SMTP_ST_CONNECT && n > 0)
		s->pregreet = true;
	if (s->tls_switch) {
		/* Sent before the 220 to STARTTLS could be read. */
		s->tls_discarded += n;
		flush(s);
		return n;
	}
	/* No buffer to be had: nothing is taken, so nothing is ACKed. */
	if (n > 0 && !buf_attach(s))
		return 0;
	if (s->start_wanted) {
		smtp_session_start(s); /* may give the buffer back */
		if (!buf_attach(s))
			return 0;
	}
	run(s);
	/* Straight from the caller's buffer while nothing is held. */
	while (taken < n && s->pend_len == 0 && !blocked(s) && s->tls == tls) {
		taken += consume(s, p + taken, n - taken);
		if (s->tls_switch)
			break;
		if (taken < n && !s->waiting && s->state < SMTP_ST_CLOSING) {
			uint32_t before = s->out_len - s->out_off;

			flush(s);
			if (s->out_len - s->out_off == before)
				break;
		}
	}
	if (s->state >= SMTP_ST_CLOSING) {
		flush(s);
		buf_release(s);
		return n;
	}
	if (s->tls_switch || s->tls != tls) {
		/* Plaintext after STARTTLS: never a command. */
		s->tls_discarded += n - taken;
		flush(s);
		buf_release(s);
		return n;
	}
	k = s->max_pending - s->pend_len;
	if (k > n - taken)
		k = n - taken;
	if (k > 0)
		memcpy(s->buf->pend + s->pend_len, p + taken, k);
	s->pend_len += k;
	taken += k;
	flush(s);
	buf_release(s);
	return taken;
}

uint32_t
smtp_session_rcv_space(const struct smtp_session *s)
{
	if (s->state >= SMTP_ST_CLOSING || s->tls_switch)
		return s->max_pending; /* read and dropped */
	return s->max_pending - s->pend_len;
}

void
smtp_session_verdict(struct smtp_session *s, uint32_t token, const struct smtp_verdict *v)
{
	if (!s->waiting || token != s->token) {
		/* The session moved on (or never asked): count, drop. */
		s->stale++;
		return;
	}
	s->waiting = false;
	/* The reader of a lent chain answers the end of DATA only after it
	 * is done with it. */
	if (s->wait_stage == SMTP_STAGE_DATA_END)
		s->txn.body_lent = false;
	apply_verdict(s, (enum smtp_stage)s->wait_stage, v);
	error_limit(s);
	run(s);
	buf_release(s);
}

void
smtp_session_writable(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	if (s->start_wanted) {
		smtp_session_start(s);
		return;
	}
	flush(s);
	run(s);
	buf_release(s);
}

/* A 421 for a session with no buffer, when none is to be had (the idle
 * timeout, an eviction): written straight to TCP, as much of it as TCP
 * takes (a session that never read its replies gets no more room than
 * this). */
static void
close_unbuffered(struct smtp_session *s, const char *enh, const char *why, size_t why_len)
{
	char text[SMTP_DOMAIN_MAX + 64], line[SMTP_LINE_MAX];
	size_t n = strlen(s->params->hostname), k;

	memcpy(text, s->params->hostname, n);
	memcpy(text + n, why, why_len);
	k = line_format(line, sizeof(line), 421, ' ', enh, text, n + why_len);
	log_reply(s, 421);
	go_closing(s);
	s->ops->write(s->ctx, line, (uint32_t)k);
}

/* A 421 and the close, the words through the buffer when one is to be
 * had, else straight to TCP as above. */
static void
close_with_421(struct smtp_session *s, const char *enh, const char *why)
{
	if (buf_attach(s)) {
		reply(s, 421, enh, "%s%s", s->params->hostname, why);
		go_closing(s);
	} else {
		close_unbuffered(s, enh, why, strlen(why));
	}
}

void
smtp_session_idle(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	if (s->state == SMTP_ST_CLOSING) {
		/* The peer never took our last words: stop waiting for it. */
		s->out_off = s->out_len = 0;
	} else if (s->state == SMTP_ST_NEW) {
		/* Never greeted (no buffer came): close without a word. */
		s->start_wanted = false;
		go_closing(s);
	} else {
		close_with_421(s, "4.4.2", " Error: timeout exceeded");
	}
	flush(s);
	buf_release(s);
}

bool
smtp_session_awaits_command(const struct smtp_session *s)
{
	/* Between commands: greeted (or refused at connect), no body being
	 * read, no verdict or switch to TLS awaited, nothing held, every reply
	 * handed to the transport. A partial command line still qualifies:
	 * closing it loses nothing the peer was told was taken. */
	return s->state >= SMTP_ST_REJECTED && s->state <= SMTP_ST_RCPT && !s->waiting &&
	       !s->tls_switch && !s->peer_eof && s->pend_len == 0 && s->bdat_left == 0 &&
	       s->out_len == s->out_off;
}

bool
smtp_session_evictable(const struct smtp_session *s)
{
	return s->state >= SMTP_ST_REJECTED && s->state <= SMTP_ST_BDAT && !s->waiting &&
	       !s->tls_switch && s->out_len == s->out_off;
}

void
smtp_session_evict(struct smtp_session *s)
{
	if (s->state >= SMTP_ST_CLOSING)
		return;
	close_with_421(s, "4.7.0", " Too many connections, closing idle session");
	flush(s);
	buf_release(s);
}

void
smtp_session_peer_closed(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	if (s->state == SMTP_ST_CLOSING) {
		flush(s);
		buf_release(s);
		return;
	}
	/* The FIN ends the input, not the replies: what is held is parsed
	 * as the verdicts come, and input_ended() closes after the last. */
	s->peer_eof = true;
	run(s);
	buf_release(s);
}

void
smtp_session_fini(struct smtp_session *s)
{
	if (s == NULL || s->magic != SMTP_MAGIC)
		return;
	session_end(s, false);
	txn_clear(s);
	if (s->buf != NULL) {
		s->ops->buf_put(s->ctx, s->buf);
		s->buf = NULL;
	}
	s->magic = 0;
}

void
smtp_session_stats(const struct smtp_session *s, struct smtp_session_stats *st)
{
	st->errors = s->errors;
	st->stale_verdicts = s->stale;
	st->chunks_held = s->chunks_held;
	st->tls_discarded = s->tls_discarded;
	st->pregreet = s->pregreet;
	st->buf_waits = s->buf_waits;
	st->buf_held = s->buf != NULL;
	st->tls = s->tls;
}
