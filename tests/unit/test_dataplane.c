/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_dataplane.c — the dataplane library links with common/ alone: the
 * worker loop and the session layer, with the TCP and SMTP engines behind
 * them, and no control plane. A call into control/ from dataplane/ fails
 * to link this test. Run without EAL: it only checks what is known before
 * any memory is taken.
 */
#include <stdint.h>
#include <stdio.h>

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
	printf("dataplane: slot %zu bytes, %u failures\n", slot, fails);
	return fails ? 1 : 0;
}
