/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/relay/fuzz_relay.c — libFuzzer target: control/relay.c against a downstream
 * that answers with arbitrary bytes.
 *
 * The downstream is a thread of this process on 127.0.0.1: for each input
 * it accepts one connection, writes the input's bytes (after the first,
 * which picks SMTP or LMTP, the recipients and the client address), shuts
 * its sending side and reads until the relay hangs up. So every reply the
 * relay parses - greeting, EHLO capabilities, XCLIENT, per-recipient and
 * LMTP answers - comes from the fuzzer, and nothing ever waits for a
 * timeout. Besides the sanitizers, the result must keep its promises: 250
 * only with every recipient delivered, otherwise 451 or a 5xx whose
 * enhanced code has the reply's class, and printable text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/chunk.h"

#include "control/relay.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int lfd;
static struct relay *relay_smtp, *relay_lmtp;
static const uint8_t *srv_data;
static size_t srv_len;
static sem_t go, done;

static void *
server(void *arg)
{
	char buf[4096];

	(void)arg;
	for (;;) {
		int fd;

		sem_wait(&go);
		fd = accept(lfd, NULL, NULL);
		if (fd >= 0) {
			size_t off = 0;
			ssize_t n;

			while (off < srv_len &&
			       (n = send(fd, srv_data + off, srv_len - off, MSG_NOSIGNAL)) > 0)
				off += (size_t)n;
			shutdown(fd, SHUT_WR);
			while (recv(fd, buf, sizeof(buf), 0) > 0)
				;
			close(fd);
		}
		sem_post(&done);
	}
	return NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	char target[64], err[256];
	struct relay_params p = { .helo = "edge.test", .pool_size = 0, .timeout_ms = 2000 };
	pthread_t th;

	(void)argc;
	(void)argv;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
		abort();
	snprintf(target, sizeof(target), "127.0.0.1:%u", ntohs(sin.sin_port));
	p.target = target;
	relay_smtp = relay_create(&p, err, sizeof(err));
	p.lmtp = true;
	relay_lmtp = relay_create(&p, err, sizeof(err));
	if (!relay_smtp || !relay_lmtp)
		abort();
	sem_init(&go, 0, 0);
	sem_init(&done, 0, 0);
	if (pthread_create(&th, NULL, server, NULL) != 0)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const rcpts[] = { "a@example.net", "b@example.net", "c@example.net",
					     "d@example.net" };
	static const uint8_t addr[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x10 };
	static _Alignas(struct chunk) uint8_t mem[sizeof(struct chunk) + 32];
	struct chunk *body = (struct chunk *)mem;
	struct relay_msg m = { .mail_from = "alice@example.org",
			       .rcpts = rcpts,
			       .helo = "client.example",
			       .ptr_name = "",
			       .prefix = ".X: y\r\n",
			       .prefix_len = 7,
			       .body = body };
	struct relay_result res;
	const char *p;
	int rc;

	if (size < 1)
		return 0;
	body->next = NULL;
	body->len = 24;
	body->cap = 32;
	memcpy(body->data, "Subject: t\r\n\r\n.\r\nbody\r\n", 24);
	m.nrcpts = 1 + (data[0] & 3);
	m.family = data[0] & 4 ? 6 : 0;
	m.addr = addr;
	srv_data = data + 1;
	srv_len = size - 1;
	sem_post(&go);
	rc = relay_deliver(data[0] & 8 ? relay_lmtp : relay_smtp, &m, &res);
	sem_wait(&done);

	if ((rc == 0) != (res.code == 250))
		abort();
	if (res.code == 250 && res.delivered != m.nrcpts)
		abort();
	if (res.code != 250 && res.code != 451 && (res.code < 500 || res.code > 599))
		abort();
	if (res.enh[0] != '0' + res.code / 100 || res.delivered > m.nrcpts)
		abort();
	for (p = res.text; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			abort();
	return 0;
}
