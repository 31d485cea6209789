/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_dataplane.c — the dataplane library links with common/ alone: the
 * worker loop and the session layer, with the TCP and SMTP engines behind
 * them, and no control plane. A call into control/ from dataplane/ fails
 * to link this test. Run without EAL: it only checks what is known before
 * any memory is taken, among it that the dataplane's real sizes stay
 * within the costs the configuration sizes flows with (common/sizing.h).
 */
#include <stdint.h>
#include <stdio.h>

#include "common/sizing.h"

#include "dataplane/session.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"

int
main(void)
{
	/* Taking their addresses makes the linker pull in the objects that
	 * hold them, with everything they call. */
	void *volatile entry[] = {
		(void *)worker_create,     (void *)worker_main,     (void *)worker_destroy,
		(void *)sess_layer_create, (void *)sess_layer_poll, (void *)dp_stats_total,
	};
	size_t slot = sess_layer_slot_bytes();
	unsigned i, fails = 0;

	for (i = 0; i < sizeof(entry) / sizeof(entry[0]); i++)
		if (!entry[i])
			fails++;
	if (slot == 0)
		fails++;
	/* A slot with its flow-table buckets (up to four 4-byte heads per
	 * flow: the table is the power of two at or above twice the flows). */
	if (slot + 16 > SIZING_SLOT_BYTES) {
		printf("dataplane: a slot is %zu bytes, sizing says %u\n", slot, SIZING_SLOT_BYTES);
		fails++;
	}
	if (sess_layer_buffer_bytes() > SIZING_BUFFER_BYTES) {
		printf("dataplane: a session buffer is %zu bytes, sizing says %u\n",
		       sess_layer_buffer_bytes(), SIZING_BUFFER_BYTES);
		fails++;
	}
	printf("dataplane: slot %zu bytes, session buffer %zu bytes, %u failures\n", slot,
	       sess_layer_buffer_bytes(), fails);
	return fails ? 1 : 0;
}
