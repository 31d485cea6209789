/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/clock.h — TSC cycles to microseconds for the worker's timers, with a
 * multiply and a shift instead of a division on every poll, and in 128 bits
 * so that it does not overflow however long the edge runs (the naive
 * cycles * 1000000 overflows 64 bits after about two hours at 2.6 GHz and
 * would send the TCP timers' clock backwards).
 */
#ifndef SMTPEDGE_COMMON_CLOCK_H
#define SMTPEDGE_COMMON_CLOCK_H

#include <stdint.h>

/* 2^32 * 10^6 / hz, for clock_us. */
static inline uint64_t
clock_mult(uint64_t hz)
{
	return (uint64_t)((((unsigned __int128)1000000u) << 32) / hz);
}

/* Microseconds in `cycles` TSC cycles. */
static inline uint64_t
clock_us(uint64_t cycles, uint64_t mult)
{
	return (uint64_t)(((unsigned __int128)cycles * mult) >> 32);
}

#endif
