/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/chunk.h — a piece of a message body or of a recipient list, as the
 * planes pass them: chains of fixed-size chunks from the worker's body
 * budget. The SMTP engine fills them; the control plane reads them while the
 * worker waits for its answer, and never changes them.
 *
 * Bodies are the dot-unstuffed message in CRLF wire form; recipient lists
 * hold each address NUL-terminated, one after another.
 */
#ifndef SMTPEDGE_COMMON_CHUNK_H
#define SMTPEDGE_COMMON_CHUNK_H

#include <stdint.h>

struct chunk {
	struct chunk *next;
	uint32_t len; /* bytes used in data[] */
	uint32_t cap; /* bytes available in data[] */
	uint8_t data[];
};

/* Every chunk of the chain that starts at head, in order. */
#define CHUNK_FOREACH(c, head) for ((c) = (head); (c) != NULL; (c) = (c)->next)

#endif
