/* SPDX-License-Identifier: BSD-3-Clause */
/* dataplane/stats.c — per-lcore dataplane counters (see stats.h). */
#include <string.h>

#include "dataplane/stats.h"

struct dp_stats dp_stats[RTE_MAX_LCORE];

static const char *const names[DP__COUNT] = {
#define DP_COUNTER_NAME(id, name) [DP_##id] = name,
	DP_COUNTERS(DP_COUNTER_NAME)
#undef DP_COUNTER_NAME
};

const char *
dp_counter_name(enum dp_counter c)
{
	return (unsigned)c < DP__COUNT ? names[c] : "?";
}

void
dp_stats_total(struct dp_stats *out)
{
	unsigned l, i;

	memset(out, 0, sizeof(*out));
	for (l = 0; l < RTE_MAX_LCORE; l++) {
		const volatile struct dp_stats *s = &dp_stats[l];

		for (i = 0; i < DP__COUNT; i++)
			out->c[i] += s->c[i];
		for (i = 0; i < PKT_DROP__COUNT; i++)
			out->drop[i] += s->drop[i];
	}
}
