/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/l23.h — answers the worker gives by itself below TCP: ARP
 * replies, IPv6 neighbour advertisements, ICMP and ICMPv6 echo replies.
 *
 * Each reply is built in place in the received frame (no allocation), and
 * goes back to the frame's source MAC: the edge keeps no neighbour table.
 * Every frame we answer came from the neighbour that should get the answer
 * (the router in front of an MX, or a peer on the link), so its source MAC is
 * fresher than any cache, costs no memory per peer and needs no resolution
 * before the first reply. TCP output uses the same rule: a session replies
 * to the MAC its last segment came from.
 */
#ifndef SMTPEDGE_DATAPLANE_L23_H
#define SMTPEDGE_DATAPLANE_L23_H

#include <stdint.h>

#include "dataplane/pkt.h"

/* Turn a classified frame into its reply, in place. room is the buffer's
 * size from frame on. Returns the reply's length, 0 when there is none. */
uint32_t l23_reply(uint8_t *frame, uint32_t len, uint32_t room, const struct pkt_info *info,
		   const struct pkt_local *l);

#endif
