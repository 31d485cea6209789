/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/check.h — the harness every C test shares.
 *
 * CHECK(cond, fmt, ...) counts one check: a failure prints where it is,
 * the condition and the message (fmt may be left out); it evaluates to
 * whether cond held, so a test can stop when going on makes no sense.
 * check_done() prints the closing "N passed, M failed" line and gives the
 * exit status. The counters are atomic: CHECK may be used from threads.
 *
 * A test made of named cases (a table of functions, a dialogue file, a
 * scenario) counts the case instead: between check_case_begin() and
 * check_case_end(), CHECKs count nothing but a failure, and the case
 * counts once, passed only if none of them failed.
 * check_verbose = true prints a line for each passed check too (its
 * message, or the condition when it has none).
 */
#ifndef SMTPEDGE_TESTS_CHECK_H
#define SMTPEDGE_TESTS_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static _Atomic unsigned check_passed, check_failed;
static _Atomic unsigned check_case_failures;
static bool check_in_case; /* cases are begun and ended by one thread */
static bool check_verbose;

/* The leading space keeps fmt a literal when the caller gave none. */
#define CHECK(cond, ...) check_at(!!(cond), __FILE__, __LINE__, #cond, " " __VA_ARGS__)

/* Two integers compared, both values printed when they differ. */
#define CHECK_EQ_INT(a, b) check_eq_int((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)

static inline bool __attribute__((format(printf, 5, 6)))
check_at(bool ok, const char *file, int line, const char *cond, const char *fmt, ...)
{
	bool msg = fmt[1] != '\0';
	va_list ap;

	if (!ok || check_verbose) {
		if (ok)
			printf("ok   %s", msg ? "" : cond);
		else
			printf("FAIL %s:%d: %s%s", file, line, cond, msg ? ": " : "");
		if (msg) {
			va_start(ap, fmt);
			vprintf(fmt + 1, ap);
			va_end(ap);
		}
		printf("\n");
		fflush(stdout);
	}
	if (check_in_case) {
		if (!ok)
			check_case_failures++;
	} else if (ok) {
		check_passed++;
	} else {
		check_failed++;
	}
	return ok;
}

static inline bool
check_eq_int(long long a, long long b, const char *file, int line, const char *as, const char *bs)
{
	return check_at(a == b, file, line, as, " %lld, expected %s = %lld", a, bs, b);
}

static inline void
check_case_begin(void)
{
	check_case_failures = 0;
	check_in_case = true;
}

/* Counts the case begun last; whether it passed. */
static inline bool
check_case_end(void)
{
	bool ok = check_case_failures == 0;

	check_in_case = false;
	if (ok)
		check_passed++;
	else
		check_failed++;
	return ok;
}

static inline int
check_done(void)
{
	printf("%u passed, %u failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
