/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/chunk.h — a piece of a message body or of a recipient list, as the
 * planes pass them: chains of fixed-size chunks from the worker's body
 * budget. The SMTP engine fills them; the control plane reads them while the
 * worker waits for its answer, and never changes them.
 *
 * Bodies are the dot-unstuffed message in CRLF wire form; recipient lists
 * hold each address NUL-terminated, one after another.
 *
 * A body is filled at its tail only, and a chunk is followed by another
 * only once it is full (len == cap). So once the header block is in, its
 * bytes and every chunk before the one it ends in are final, and the
 * control plane may read them while the worker goes on at the tail
 * (MSG_DKIM_HEADERS, common/msg.h). Such a reader takes the header block's
 * length from the message, never from the chunks: it walks `next` only
 * while bytes remain to be read, takes `len` only of chunks it reads past
 * (full, so final), and of the chunk the length ends in takes what the
 * length leaves, reading neither its `len` nor its `next`, which the
 * worker may be writing. The same holds for a longer length the worker
 * announces later (MSG_BODY_FINAL): those bytes are final too.
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
