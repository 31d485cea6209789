/*
 * check.h - the few macros our C unit tests share. Each CHECK counts one
 * assertion; check_done() prints the closing "N passed, M failed" line and
 * gives the exit status.
 */
#ifndef SMTPEDGE_CHECK_H
#define SMTPEDGE_CHECK_H

#include <stdio.h>

static unsigned check_passed, check_failed;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (cond) {                                                  \
			check_passed++;                                      \
		} else {                                                     \
			check_failed++;                                      \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
			printf(__VA_ARGS__);                                 \
			printf("\n");                                        \
		}                                                            \
	} while (0)

static inline int
check_done(void)
{
	printf("%u passed, %u failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
