/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp_addr.c — parse an SMTP reverse-path or forward-path.
 *
 * RFC 5321 4.1.2 grammar, with RFC 6531's UTF-8 additions when the
 * transaction declared SMTPUTF8. The parser is strict where being lax would
 * let a malformed address reach the control plane's checks (SPF takes the
 * domain of MAIL FROM; relay control takes the domain of RCPT TO), and
 * enforces the size limits of 4.5.3.1 so that fixed buffers downstream are
 * always big enough. A source route (<@a,@b:user@dom>) is parsed and
 * dropped, as 4.1.1.3 and appendix C allow. A local part that carries a
 * route of its own (the "%" hack, a "!" bang path, an "@" inside quotes) is
 * valid syntax and is flagged, not refused: that is the caller's policy.
 */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "dataplane/smtp.h"
#include "dataplane/smtp_addr.h"

struct cur {
	const unsigned char *p;
	uint32_t n;
	uint32_t i;
	unsigned flags;
	bool non_ascii;
	bool need_utf8; /* saw non-ASCII without SMTPUTF8 */
};

static int
peek(const struct cur *c)
{
	return c->i < c->n ? c->p[c->i] : -1;
}

static bool
is_alpha(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool
is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static bool
is_atext(int ch)
{
	return is_alpha(ch) || is_digit(ch) ||
	       (ch > 0 && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/*
 * One UTF-8 scalar (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) at
 * the cursor; returns its length, 0 when the bytes are not UTF-8. Without
 * SMTPUTF8 it only notes that UTF-8 was needed.
 */
static uint32_t
utf8_char(struct cur *c)
{
	const unsigned char *q = c->p + c->i;
	uint32_t left = c->n - c->i, len, cp, k;
	unsigned char b = q[0];

	if (b >= 0xc2 && b <= 0xdf) {
		len = 2;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4;
		cp = b & 0x07;
	} else {
		return 0;
	}
	if (left < len)
		return 0;
	for (k = 1; k < len; k++) {
		if ((q[k] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (q[k] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	c->non_ascii = true;
	if (!(c->flags & SMTP_ADDR_UTF8))
		c->need_utf8 = true;
	return len;
}

/* Atom = 1*atext (RFC 6531: atext =/ UTF8-non-ascii). */
static bool
atom(struct cur *c)
{
	uint32_t start = c->i, u;
	int ch;

	while ((ch = peek(c)) >= 0) {
		if (is_atext(ch)) {
			c->i++;
		} else if (ch >= 0x80 && (u = utf8_char(c)) > 0) {
			c->i += u;
		} else {
			break;
		}
	}
	return c->i > start;
}

/* Dot-string = Atom *("." Atom) */
static bool
dot_string(struct cur *c)
{
	if (!atom(c))
		return false;
	while (peek(c) == '.') {
		c->i++;
		if (!atom(c))
			return false;
	}
	return true;
}

/* Quoted-string = DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE */
static bool
quoted_string(struct cur *c)
{
	uint32_t u;
	int ch;

	c->i++; /* the opening quote */
	while ((ch = peek(c)) >= 0) {
		if (ch == '"') {
			c->i++;
			return true;
		}
		if (ch == '\\') {
			c->i++;
			ch = peek(c);
			if (ch < 32 || ch > 126)
				return false;
			c->i++;
		} else if (ch >= 32 && ch <= 126) {
			c->i++;
		} else if (ch >= 0x80 && (u = utf8_char(c)) > 0) {
			c->i += u;
		} else {
			return false;
		}
	}
	return false;
}

/* sub-domain = Let-dig [Ldh-str]; RFC 6531: =/ U-label (UTF-8 letters). */
static bool
sub_domain(struct cur *c)
{
	uint32_t start = c->i, u;
	bool last_hyphen = false;
	int ch;

	while ((ch = peek(c)) >= 0) {
		if (is_alpha(ch) || is_digit(ch)) {
			c->i++;
			last_hyphen = false;
		} else if (ch == '-' && c->i > start) {
			c->i++;
			last_hyphen = true;
		} else if (ch >= 0x80 && (u = utf8_char(c)) > 0) {
			c->i += u;
			last_hyphen = false;
		} else {
			break;
		}
	}
	return c->i > start && !last_hyphen && c->i - start <= 63;
}

/* Domain = sub-domain *("." sub-domain) */
static bool
domain(struct cur *c)
{
	if (!sub_domain(c))
		return false;
	while (peek(c) == '.') {
		c->i++;
		if (!sub_domain(c))
			return false;
	}
	return true;
}

static bool
ipv4_literal(const unsigned char *q, uint32_t n)
{
	uint32_t i = 0, part;

	for (part = 0; part < 4; part++) {
		uint32_t v = 0, digits = 0;

		if (part > 0) {
			if (i >= n || q[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit(q[i]) && digits < 3) {
			v = v * 10 + (q[i] - '0');
			i++;
			digits++;
		}
		if (digits == 0 || v > 255)
			return false;
	}
	return i == n;
}

/*
 * address-literal = "[" (IPv4 / "IPv6:" IPv6 / tag ":" dcontent) "]";
 * the cursor is on '['.
 */
static bool
address_literal(struct cur *c)
{
	const unsigned char *q = c->p + c->i + 1;
	const unsigned char *end = memchr(q, ']', c->n - c->i - 1);
	uint32_t len, k;

	if (end == NULL)
		return false;
	len = (uint32_t)(end - q);
	c->i += len + 2;
	if (ipv4_literal(q, len))
		return true;
	if (len > 5 && strncasecmp((const char *)q, "IPv6:", 5) == 0) {
		char tmp[64];
		unsigned char bin[16];

		if (len - 5 >= sizeof(tmp))
			return false;
		memcpy(tmp, q + 5, len - 5);
		tmp[len - 5] = '\0';
		return inet_pton(AF_INET6, tmp, bin) == 1;
	}
	/* General-address-literal: Ldh-str ":" 1*dcontent */
	for (k = 0; k < len && (is_alpha(q[k]) || is_digit(q[k]) || q[k] == '-'); k++)
		;
	if (k == 0 || q[k - 1] == '-' || k + 1 >= len || q[k] != ':')
		return false;
	for (k++; k < len; k++)
		if (q[k] < 33 || q[k] > 126 || q[k] == '[' || q[k] == '\\' || q[k] == ']')
			return false;
	return true;
}

/* A-d-l = At-domain *( "," At-domain ) ":"; the cursor is on '@'. */
static bool
source_route(struct cur *c)
{
	for (;;) {
		if (peek(c) != '@')
			return false;
		c->i++;
		if (!domain(c))
			return false;
		if (peek(c) == ':') {
			c->i++;
			return true;
		}
		if (peek(c) != ',')
			return false;
		c->i++;
	}
}

static enum smtp_addr_result
finish(const struct cur *c, enum smtp_addr_result r)
{
	if (c->need_utf8 && r != SMTP_ADDR_TOO_LONG)
		return SMTP_ADDR_NEED_UTF8;
	return r;
}

enum smtp_addr_result
smtp_addr_parse(const char *p, uint32_t n, unsigned flags, struct smtp_addr *a)
{
	struct cur c = { (const unsigned char *)p, n, 0, flags, false, false };
	uint32_t local_start, local_len, k;

	memset(a, 0, sizeof(*a));
	if (n < 2 || p[0] != '<')
		return SMTP_ADDR_SYNTAX;
	c.i = 1;
	if (p[1] == '>') {
		if (!(flags & SMTP_ADDR_NULL_OK))
			return SMTP_ADDR_SYNTAX;
		a->is_null = true;
		a->path_len = 2;
		return SMTP_ADDR_OK;
	}
	if ((flags & SMTP_ADDR_POSTMASTER) && n >= 12 &&
	    strncasecmp(p + 1, "postmaster>", 11) == 0) {
		a->is_postmaster = true;
		a->path_len = 12;
		a->mbox_off = 1;
		a->mbox_len = 10;
		return SMTP_ADDR_OK;
	}
	if (peek(&c) == '@' && !source_route(&c))
		return finish(&c, SMTP_ADDR_SYNTAX);

	local_start = c.i;
	if (peek(&c) == '"' ? !quoted_string(&c) : !dot_string(&c))
		return finish(&c, SMTP_ADDR_SYNTAX);
	local_len = c.i - local_start;
	for (k = local_start; k < c.i; k++)
		if (p[k] == '%' || p[k] == '!' || p[k] == '@')
			a->routing = true;
	if (peek(&c) != '@')
		return finish(&c, SMTP_ADDR_SYNTAX);
	c.i++;
	a->domain_off = c.i;
	if (peek(&c) == '[' ? !address_literal(&c) : !domain(&c))
		return finish(&c, SMTP_ADDR_SYNTAX);
	a->domain_len = c.i - a->domain_off;
	if (peek(&c) != '>')
		return finish(&c, SMTP_ADDR_SYNTAX);
	c.i++;

	a->path_len = c.i;
	a->mbox_off = local_start;
	a->mbox_len = c.i - 1 - local_start;
	a->non_ascii = c.non_ascii;
	if (local_len > SMTP_LOCAL_MAX || a->domain_len > SMTP_DOMAIN_MAX ||
	    a->path_len > SMTP_PATH_MAX)
		return SMTP_ADDR_TOO_LONG;
	return finish(&c, SMTP_ADDR_OK);
}

const char *
smtp_addr_result_name(enum smtp_addr_result r)
{
	static const char *const names[] = {
		[SMTP_ADDR_OK] = "ok",
		[SMTP_ADDR_SYNTAX] = "syntax",
		[SMTP_ADDR_TOO_LONG] = "too-long",
		[SMTP_ADDR_NEED_UTF8] = "need-utf8",
	};

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}
