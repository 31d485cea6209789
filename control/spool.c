/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/spool.c — Maildir delivery of accepted mail (see spool.h).
 *
 * The queue id is ours, made before the headers that carry it, so the spool
 * and the relay share it.
 *
 * The order is the point: the file is written in tmp/, fsync'd, renamed
 * into new/, and new/ is fsync'd, and only then does the caller tell the
 * sender 250. A crash before the rename leaves at most a file in tmp/, which
 * Maildir readers ignore; the sender was not told 250 and will retry. The
 * bytes after our Received: header are exactly the dot-unstuffed bytes the
 * sender sent, in wire form (CRLF line ends).
 *
 * Every file operation goes through the handles of tmp/ and new/ taken at
 * start (openat, renameat, unlinkat, and fsync of new/), so a directory
 * renamed or replaced under the spool later cannot redirect a message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/txrec.h"

#include "control/spool.h"

#define IOV_BATCH 64

struct spool {
	char hostname[256];
	int tmp_fd, new_fd; /* the directories: every file goes through them */
	atomic_uint counter;
};

static atomic_uint id_counter;

void
queue_id_new(char out[24])
{
	unsigned n = atomic_fetch_add(&id_counter, 1);
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(out, 24, "%08lX%05lX%04X", (unsigned long)ts.tv_sec,
		 (unsigned long)(ts.tv_nsec / 1000) & 0xfffff, n & 0xffff);
}

static int
mkdir_p(const char *path)
{
	char buf[600], *p;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0750) < 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

struct spool *
spool_open(const char *dir, const char *hostname, char *err, size_t errlen)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	struct spool *s = calloc(1, sizeof(*s));
	char path[600];
	size_t i;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->tmp_fd = s->new_fd = -1;
	snprintf(s->hostname, sizeof(s->hostname), "%s", hostname);
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
		if (mkdir_p(path) < 0) {
			snprintf(err, errlen, "spool %s: cannot create %s: %s", dir, path,
				 strerror(errno));
			spool_close(s);
			return NULL;
		}
	}
	snprintf(path, sizeof(path), "%s/tmp", dir);
	s->tmp_fd = open(path, O_RDONLY | O_DIRECTORY);
	snprintf(path, sizeof(path), "%s/new", dir);
	s->new_fd = open(path, O_RDONLY | O_DIRECTORY);
	if (s->tmp_fd < 0 || s->new_fd < 0) {
		snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
		spool_close(s);
		return NULL;
	}
	return s;
}

void
spool_close(struct spool *s)
{
	if (!s)
		return;
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->new_fd >= 0)
		close(s->new_fd);
	free(s);
}

/* A header field may not carry what the peer sent as is: CR, LF and
 * controls become '?', so a HELO cannot add header lines. */
static void
clean(char *out, size_t n, const char *in)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < n; i++)
		out[i] = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];
	out[i] = '\0';
}

/* The HELO of "from HELO (NAME [ADDR])" is one word: as clean(), and
 * white space, parentheses, backslash, '"' and ';' become '?' too, so a HELO
 * such as "x (bank.example [IPv6:...])" cannot pose as the comment that
 * follows it, nor end the clause. */
static void
clean_word(char *out, size_t n, const char *in)
{
	size_t i;

	clean(out, n, in);
	for (i = 0; out[i]; i++)
		if (strchr(" ()\\\";", out[i]))
			out[i] = '?';
}

/* Text for the comment of "from HELO (NAME [ADDR])": as clean(), and
 * parentheses and backslashes escaped, so that a name cannot close the
 * comment (RFC 5322 3.2.2). */
static void
clean_comment(char *out, size_t n, const char *in)
{
	size_t i, o = 0;

	for (i = 0; in[i] && o + 3 < n; i++) {
		char c = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];

		if (c == '(' || c == ')' || c == '\\')
			out[o++] = '\\';
		out[o++] = c;
	}
	out[o] = '\0';
}

size_t
spool_received(const struct txrec *rec, const char *hostname, char *out, size_t n)
{
	char addr[INET6_ADDRSTRLEN], helo[256], ptr[512], rcpt[300], date[64];
	char tls[160];
	time_t t = (time_t)(rec->time_us / 1000000);
	struct tm tm;
	int len;

	inet_ntop(rec->family == 6 ? AF_INET6 : AF_INET, rec->addr, addr, sizeof(addr));
	clean_word(helo, sizeof(helo), rec->helo[0] ? rec->helo : "unknown");
	/* Only a forward-confirmed name is the client's: a PTR anyone can
	 * write, the forward zone only its owner (Postfix says "unknown"
	 * alike). */
	clean_comment(ptr, sizeof(ptr),
		      rec->ptr == PTR_PASS && rec->ptr_name[0] ? rec->ptr_name : "unknown");
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	rcpt[0] = '\0';
	if (rec->rcpt[0] && rec->smtp.nrcpts == 1) {
		char r[260];

		clean(r, sizeof(r), rec->rcpt);
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", r);
	}
	/* After STARTTLS: ESMTPS (RFC 3848) and, as Postfix writes it, the
	 * protocol and cipher in a comment. */
	tls[0] = '\0';
	if (rec->tls_version[0])
		snprintf(tls, sizeof(tls), "\t(using %s with cipher %s (%u/%u bits))\r\n",
			 rec->tls_version, rec->tls_cipher, rec->tls_bits, rec->tls_alg_bits);
	len = snprintf(out, n,
		       "Received: from %s (%s [%s%s])\r\n"
		       "%s"
		       "\tby %s (smtpedge) with ESMTP%s id %s%s;\r\n"
		       "\t%s\r\n",
		       helo, ptr, rec->family == 6 ? "IPv6:" : "", addr, tls, hostname,
		       rec->tls_version[0] ? "S" : "", rec->queue_id, rcpt, date);
	return len < 0 ? 0 : ((size_t)len < n ? (size_t)len : n - 1);
}

static int
write_all(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t w = writev(fd, iov, cnt);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (cnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int
write_message(int fd, const char *hdr, size_t hlen, const struct chunk *c)
{
	struct iovec iov[IOV_BATCH];
	int cnt = 0;

	iov[cnt].iov_base = (void *)(uintptr_t)hdr;
	iov[cnt++].iov_len = hlen;
	for (; c; c = c->next) {
		if (c->len == 0)
			continue;
		iov[cnt].iov_base = (void *)(uintptr_t)c->data;
		iov[cnt++].iov_len = c->len;
		if (cnt == IOV_BATCH) {
			if (write_all(fd, iov, cnt) < 0)
				return -1;
			cnt = 0;
		}
	}
	return cnt ? write_all(fd, iov, cnt) : 0;
}

int
spool_write(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg)
{
	char name[400];
	unsigned n = atomic_fetch_add(&s->counter, 1);
	struct timespec ts;
	int fd, saved;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof(name), "%lu.M%luP%dQ%u.%s", (unsigned long)ts.tv_sec,
		 (unsigned long)(ts.tv_nsec / 1000), (int)getpid(), n, s->hostname);

	fd = openat(s->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return -1;
	if (write_message(fd, prefix, prefix_len, msg) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (renameat(s->tmp_fd, name, s->new_fd, name) < 0)
		goto fail;
	if (fsync(s->new_fd) < 0) {
		saved = errno;
		unlinkat(s->new_fd, name, 0);
		errno = saved;
		return -1;
	}
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlinkat(s->tmp_fd, name, 0);
	errno = saved;
	return -1;
}
