/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns_name.h — a PTR record's target, from wire form to text.
 *
 * The target comes from whoever controls the sender's reverse zone, so it
 * is hostile input: it is checked label by label, and every byte that is
 * not a plain hostname character is escaped as a zone file writes it
 * (\. \\ \DDD ...). The text is what rDNS hands to ub_resolve_async() for
 * the forward lookup, so it must name exactly the same labels: a label
 * "a.b" must not become the two labels "a" and "b".
 */
#ifndef SMTPEDGE_DNS_RDNS_NAME_H
#define SMTPEDGE_DNS_RDNS_NAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/rdns.h"

/* wire: an uncompressed name, n bytes (trailing bytes after the root label
 * are ignored). out: the name with its final dot ("." for the root).
 * false when the name is malformed (label over 63, runs past n, no root
 * label, a compression pointer) or its text needs RDNS_NAME_LEN bytes or
 * more. */
bool rdns_name_text(const uint8_t *wire, size_t n, char out[RDNS_NAME_LEN]);

#endif
