/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim_ub.h — libopendkim's DNS hooks over smtpedge's one libunbound
 * context. Private to auth/dkim*.c: the control plane only sees auth/dkim.h.
 *
 * libopendkim asks for keys through four hooks (start, wait, cancel and a
 * service handle). This adapter answers them from the caller's ub_ctx, so
 * DKIM shares the resolver, the cache and the forwarder with every other
 * lookup smtpedge makes, and never reads /etc/resolv.conf.
 */
#ifndef SMTPEDGE_AUTH_DKIM_UB_H
#define SMTPEDGE_AUTH_DKIM_UB_H

#include <stdint.h>

#include <opendkim/dkim.h>

struct ub_ctx;
struct dkim_ub;

/* NULL + errno on failure. timeout_ms bounds every single key lookup. */
struct dkim_ub *dkim_ub_create(struct ub_ctx *ub, uint32_t timeout_ms);

/* Only when no lookup is in progress. Tolerates NULL and half-built. */
struct dkim_ub *dkim_ub_destroy(struct dkim_ub *dns);

/* Point the library's DNS hooks at dns (and switch off its resolv.conf
 * init/close hooks, which would otherwise be handed our service pointer). */
void dkim_ub_attach(DKIM_LIB *lib, struct dkim_ub *dns);

#endif
