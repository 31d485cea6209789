/* planes.c - the rings and the record pool between the planes (planes.h). */
#include <stdio.h>

#include <rte_errno.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "control/config.h"
#include "control/msg.h"
#include "control/planes.h"
#include "control/txrec.h"

int
planes_create(const struct edge_config *cfg, unsigned n, struct planes *pl)
{
	uint32_t size = rte_align32pow2(cfg->flows * 4);
	char name[RTE_RING_NAMESIZE];
	unsigned i;

	pl->n = n;
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "req_%u", i);
		pl->req[i] = rte_ring_create_elem(name, sizeof(struct ctl_msg), size,
			(int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "ver_%u", i);
		pl->ver[i] = rte_ring_create_elem(name, sizeof(struct ctl_msg), size,
			(int)rte_socket_id(), RING_F_MP_HTS_ENQ | RING_F_SC_DEQ);
		if (!pl->req[i] || !pl->ver[i]) {
			fprintf(stderr, "smtpedge: rings for worker %u: %s\n", i,
				rte_strerror(rte_errno));
			return -1;
		}
	}
	pl->txrecs = rte_mempool_create("txrecs", n * cfg->flows * 2 + 1023,
		sizeof(struct txrec), 64, 0, NULL, NULL, NULL, NULL,
		(int)rte_socket_id(), 0);
	if (!pl->txrecs) {
		fprintf(stderr, "smtpedge: transaction records: %s (more memory with -m, or fewer [dataplane] flows)\n",
			rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

void
planes_free(struct planes *pl)
{
	unsigned i;

	for (i = 0; i < pl->n; i++) {
		rte_ring_free(pl->req[i]);
		rte_ring_free(pl->ver[i]);
	}
	rte_mempool_free(pl->txrecs);
}
