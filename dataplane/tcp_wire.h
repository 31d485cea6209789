/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/tcp_wire.h — the TCP header's flag bits as they are on the
 * wire (RFC 9293 3.1): the engine reads and writes them, and the tests and
 * benchmarks that craft or read segments use the same ones.
 */
#ifndef SMTPEDGE_DATAPLANE_TCP_WIRE_H
#define SMTPEDGE_DATAPLANE_TCP_WIRE_H

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10

#endif
