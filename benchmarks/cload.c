/*
 * A WebSocket echo load generator (and a bare echo server) in C, so that the
 * generator is never what limits an echo benchmark.
 *
 * Built on demand by benchmarks/_cload.py (gcc -O2); nothing third-party.
 *
 *   cload echo PORT PATH CLIENTS SECONDS SIZE
 *       Open CLIENTS connections to 127.0.0.1:PORT (one prepared handshake
 *       to PATH), then run a closed loop for SECONDS: each connection sends a
 *       SIZE-byte text frame (masked with the all-zero key, so one prepared
 *       frame is sent as is), waits for one data frame back, sends the next.
 *       Prints one JSON line: messages, seconds, this process's CPU seconds
 *       (user + system) during the loop, and a sample of round-trip times.
 *
 *   cload server PORT
 *       Listen on 127.0.0.1:PORT (0: any; the port is printed as JSON), answer
 *       each handshake with a fixed 101 and echo every byte after it, in one
 *       epoll loop. Against it the generator measures its own ceiling.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_SAMPLES 200000

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what) {
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    exit(1);
}

typedef struct {
    int fd;
    int have;        /* bytes in buf */
    double sent_at;  /* when the outstanding message left */
    unsigned char buf[BUF];
} conn_t;

static void send_all(int fd, const unsigned char *data, size_t n) {
    while (n) {
        ssize_t k = send(fd, data, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            die("send");
        }
        data += k;
        n -= (size_t)k;
    }
}

/* Length of the first complete frame in buf, 0 if incomplete; *opcode set. */
static long frame_length(const unsigned char *b, long n, int *opcode) {
    if (n < 2) return 0;
    long head = 2, len = b[1] & 0x7f;
    if (len == 126) {
        if (n < 4) return 0;
        len = ((long)b[2] << 8) | b[3];
        head = 4;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 2; i < 10; i++) len = (len << 8) | b[i];
        head = 10;
    }
    if (b[1] & 0x80) head += 4; /* masked: the raw echo servers return our frame */
    if (n < head + len) return 0;
    *opcode = b[0] & 0x0f;
    return head + len;
}

/* The upgrade request of client i: a "%d" in the path becomes i (one object per client). */
static int upgrade_request(char *request, size_t room, const char *path, int port, int i) {
    char target[512];
    if (strstr(path, "%d")) snprintf(target, sizeof target, path, i);
    else snprintf(target, sizeof target, "%s", path);
    return snprintf(request, room,
                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    target, port);
}

static int run_echo(int port, const char *path, int clients, double seconds, int size) {
    char request[1024];
    int rlen;
    unsigned char *message = malloc((size_t)size + 14);
    long mlen;
    message[0] = 0x81;
    if (size < 126) {
        message[1] = 0x80 | size;
        mlen = 2;
    } else {
        message[1] = 0x80 | 126;
        message[2] = (unsigned char)(size >> 8);
        message[3] = (unsigned char)size;
        mlen = 4;
    }
    memset(message + mlen, 0, 4);
    mlen += 4;
    memset(message + mlen, 'e', (size_t)size);
    mlen += size;

    conn_t *conns = calloc((size_t)clients, sizeof(conn_t));
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(0x7f000001);
    for (int i = 0; i < clients; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rlen = upgrade_request(request, sizeof request, path, port, i);
        send_all(fd, (unsigned char *)request, (size_t)rlen);
        conn_t *c = &conns[i];
        c->fd = fd;
        for (;;) { /* blocking read of the 101 */
            ssize_t k = recv(fd, c->buf + c->have, BUF - c->have, 0);
            if (k <= 0) die("handshake");
            c->have += (int)k;
            unsigned char *end = memmem(c->buf, (size_t)c->have, "\r\n\r\n", 4);
            if (end) {
                if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                    errno = EPROTO;
                    die("handshake refused");
                }
                long rest = c->have - (end + 4 - c->buf);
                memmove(c->buf, end + 4, (size_t)rest);
                c->have = (int)rest;
                break;
            }
        }
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < clients; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }
    double *samples = malloc(sizeof(double) * MAX_SAMPLES);
    long nsamples = 0, stride = 1, messages = 0, outstanding = clients;
    double cpu0 = cpu_seconds(), began = now(), end = began + seconds;
    for (int i = 0; i < clients; i++) {
        conns[i].sent_at = now();
        send_all(conns[i].fd, message, (size_t)mlen);
    }
    struct epoll_event events[256];
    while (outstanding > 0) {
        double t = now();
        if (t > end + 5) break;
        int n = epoll_wait(ep, events, 256, 50);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t k = recv(c->fd, c->buf + c->have, BUF - c->have, 0);
            if (k <= 0) {
                if (k < 0 && errno == EAGAIN) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                outstanding--;
                continue;
            }
            c->have += (int)k;
            long pos = 0;
            int opcode, answered = 0;
            for (;;) {
                long flen = frame_length(c->buf + pos, c->have - pos, &opcode);
                if (!flen) break;
                pos += flen;
                if (opcode == 1 || opcode == 2) answered++;
            }
            if (pos) {
                memmove(c->buf, c->buf + pos, (size_t)(c->have - pos));
                c->have -= (int)pos;
            }
            if (!answered) continue;
            t = now();
            if (t <= end) {
                messages++;
                if (messages % stride == 0) {
                    if (nsamples == MAX_SAMPLES) { /* keep every other: halve the rate */
                        for (long j = 0; j < MAX_SAMPLES / 2; j++) samples[j] = samples[2 * j];
                        nsamples = MAX_SAMPLES / 2;
                        stride *= 2;
                    }
                    samples[nsamples++] = t - c->sent_at;
                }
                c->sent_at = t;
                send_all(c->fd, message, (size_t)mlen);
            } else {
                outstanding--;
            }
        }
    }
    double cpu = cpu_seconds() - cpu0;
    printf("{\"messages\": %ld, \"seconds\": %.6f, \"cpu\": %.6f, \"latencies\": [", messages,
           seconds, cpu);
    long step = nsamples > 4000 ? nsamples / 4000 : 1;
    for (long j = 0, first = 1; j < nsamples; j += step, first = 0)
        printf("%s%.7f", first ? "" : ", ", samples[j]);
    printf("]}\n");
    for (int i = 0; i < clients; i++) close(conns[i].fd);
    return 0;
}

static const char RESPONSE[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: x\r\n\r\n";

typedef struct {
    int fd;
    int open; /* past the handshake */
    int have;
    char head[4096];
} peer_t;

static int run_server(int port) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(ls, 1024) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("{\"port\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    static unsigned char buf[BUF];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int e = 0; e < n; e++) {
            peer_t *p = events[e].data.ptr;
            if (p == NULL) {
                int fd = accept(ls, NULL, NULL);
                if (fd < 0) continue;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                p = calloc(1, sizeof(peer_t));
                p->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            if (!p->open) {
                ssize_t k = recv(p->fd, p->head + p->have, sizeof p->head - p->have, 0);
                if (k <= 0) goto drop;
                p->have += (int)k;
                char *end = memmem(p->head, (size_t)p->have, "\r\n\r\n", 4);
                if (!end) continue;
                send_all(p->fd, (const unsigned char *)RESPONSE, sizeof RESPONSE - 1);
                p->open = 1;
                long rest = p->have - (end + 4 - p->head);
                if (rest) send_all(p->fd, (unsigned char *)end + 4, (size_t)rest);
                continue;
            }
            ssize_t k = recv(p->fd, buf, BUF, 0);
            if (k <= 0) goto drop;
            send_all(p->fd, buf, (size_t)k);
            continue;
        drop:
            epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
            close(p->fd);
            free(p);
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    if (argc == 7 && strcmp(argv[1], "echo") == 0)
        return run_echo(atoi(argv[2]), argv[3], atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
    if (argc == 3 && strcmp(argv[1], "server") == 0) return run_server(atoi(argv[2]));
    fprintf(stderr, "usage: cload echo PORT PATH CLIENTS SECONDS SIZE | cload server PORT\n");
    return 2;
}
