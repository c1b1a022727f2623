/*
 * A reference session relay in C, for bench/pgwire.sh (NATIVE=1) only: not part of the node.
 *
 *   native_relay PORT ENGINE_SOCKET
 *
 * Listens on 127.0.0.1:PORT; each client gets its own connection to the engine's Unix socket,
 * and bytes are relayed both ways as they come, unread (the client logs in to the engine
 * itself). One thread, one epoll set, recv/send per chunk: the least any session relay can
 * do per transaction, so the benchmark shows what the node's session port costs over that
 * floor, and what the floor reaches against PgBouncer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHUNK 65536

struct side {
    int fd;
    struct side *peer;
    char *pending;  /* bytes for this side that it did not take yet */
    size_t length, offset;
};

static int poll_set;
static struct side *closed[64];  /* at most one per event of a batch */
static int closed_count;

static void watch(struct side *side, unsigned events, int op) {
    struct epoll_event event = {.events = events, .data.ptr = side};
    epoll_ctl(poll_set, op, side->fd, &event);
}

static void close_pair(struct side *side) {
    if (side->fd < 0) return;
    close(side->fd);
    close(side->peer->fd);
    side->fd = side->peer->fd = -1;
    closed[closed_count++] = side;  /* freed after this batch of events */
}

static void accept_client(int listener, const char *engine_socket) {
    int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
    if (client < 0) return;
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int engine = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path, engine_socket, sizeof address.sun_path - 1);
    if (connect(engine, (struct sockaddr *)&address, sizeof address) != 0) {
        close(client);
        close(engine);
        return;
    }
    if (fcntl(engine, F_SETFL, O_NONBLOCK) != 0) { close(client); close(engine); return; }
    struct side *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    a->fd = client; b->fd = engine; a->peer = b; b->peer = a;
    watch(a, EPOLLIN, EPOLL_CTL_ADD);
    watch(b, EPOLLIN, EPOLL_CTL_ADD);
}

static void readable(struct side *source) {
    static char chunk[CHUNK];
    struct side *target = source->peer;
    if (target->pending != NULL) return;  /* a hang-up reported while paused: drain first */
    ssize_t got = recv(source->fd, chunk, CHUNK, 0);
    if (got <= 0) {
        if (got < 0 && errno == EAGAIN) return;
        close_pair(source);
        return;
    }
    ssize_t sent = send(target->fd, chunk, got, MSG_NOSIGNAL);
    if (sent < 0 && errno != EAGAIN) { close_pair(source); return; }
    if (sent < 0) sent = 0;
    if (sent < got) {  /* backpressure: hold the rest, stop reading the source until it drains */
        target->pending = malloc(got - sent);
        memcpy(target->pending, chunk + sent, got - sent);
        target->length = got - sent;
        target->offset = 0;
        watch(target, EPOLLOUT, EPOLL_CTL_MOD);
        watch(source, 0, EPOLL_CTL_MOD);
    }
}

static void writable(struct side *target) {
    ssize_t sent = send(target->fd, target->pending + target->offset,
                        target->length - target->offset, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN) close_pair(target);
        return;
    }
    target->offset += sent;
    if (target->offset < target->length) return;
    free(target->pending);
    target->pending = NULL;
    watch(target, EPOLLIN, EPOLL_CTL_MOD);
    watch(target->peer, EPOLLIN, EPOLL_CTL_MOD);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT ENGINE_SOCKET\n", argv[0]);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 128) != 0) {
        perror("native_relay");
        return 1;
    }
    poll_set = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(poll_set, EPOLL_CTL_ADD, listener, &event);
    struct epoll_event events[64];
    for (;;) {
        int ready = epoll_wait(poll_set, events, 64, -1);
        for (int i = 0; i < ready; i++) {
            struct side *side = events[i].data.ptr;
            if (side == NULL) accept_client(listener, argv[2]);
            else if (side->fd < 0) continue;
            else if (events[i].events & EPOLLOUT) writable(side);
            else readable(side);
        }
        for (int i = 0; i < closed_count; i++) {
            free(closed[i]->pending);
            free(closed[i]->peer->pending);
            free(closed[i]->peer);
            free(closed[i]);
        }
        closed_count = 0;
    }
}
