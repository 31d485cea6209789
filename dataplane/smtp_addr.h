/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp_addr.h — the SMTP path parser of the smtpedge SMTP engine.
 *
 * Kept apart from smtp.c so that the grammar of RFC 5321 4.1.2 (with the
 * RFC 6531 extensions for SMTPUTF8) is one small pure function that unit
 * tests can walk through a table of good and bad paths.
 */
#ifndef SMTPEDGE_DATAPLANE_SMTP_ADDR_H
#define SMTPEDGE_DATAPLANE_SMTP_ADDR_H

#include <stdbool.h>
#include <stdint.h>

#define SMTP_ADDR_NULL_OK    0x1u /* "<>" is a path (MAIL FROM) */
#define SMTP_ADDR_POSTMASTER 0x2u /* "<postmaster>" without domain (RCPT) */
#define SMTP_ADDR_UTF8       0x4u /* RFC 6531: UTF-8 in local part, domain */

enum smtp_addr_result {
	SMTP_ADDR_OK,
	SMTP_ADDR_SYNTAX,    /* not a path */
	SMTP_ADDR_TOO_LONG,  /* local part > 64, domain > 255, path > 256 */
	SMTP_ADDR_NEED_UTF8, /* non-ASCII without SMTPUTF8 */
};

struct smtp_addr {
	uint32_t path_len;   /* bytes from '<' to '>' inclusive */
	uint32_t mbox_off;   /* the mailbox (source route dropped) ... */
	uint32_t mbox_len;   /* ... "local@domain", 0 for <> */
	uint32_t domain_off; /* the domain or [address literal] */
	uint32_t domain_len; /* 0 for <> and <postmaster> */
	bool is_null;
	bool is_postmaster;
	bool non_ascii;
	bool routing; /* '%', '!' or '@' in the local part (quoted or
			         not): a route some MTAs would still follow */
};

/* Parses the path that starts at p[0] ('<' expected) within n bytes. */
enum smtp_addr_result smtp_addr_parse(const char *p, uint32_t n, unsigned flags,
				      struct smtp_addr *a);
const char *smtp_addr_result_name(enum smtp_addr_result r);

#endif
