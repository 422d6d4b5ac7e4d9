// LD_PRELOAD shim for test_resolve_once.py: every getaddrinfo() of a name ending in
// ".resolve-count.test" (a reserved TLD, RFC 6761) appends "NAME:PORT" to $WSGATE_RESOLVE_LOG
// and is answered as 127.0.0.1, so the test counts wsgate's resolutions without DNS or
// /etc/hosts. Every other name goes to the real resolver.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*GetAddrInfo)(const char*, const char*, const struct addrinfo*, struct addrinfo**);

static const char kCountedSuffix[] = ".resolve-count.test";

int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                struct addrinfo** res) {
  GetAddrInfo real = (GetAddrInfo)dlsym(RTLD_NEXT, "getaddrinfo");
  const size_t node_len = node != NULL ? strlen(node) : 0;
  const size_t suffix_len = sizeof(kCountedSuffix) - 1;
  if (node_len <= suffix_len || strcmp(node + node_len - suffix_len, kCountedSuffix) != 0) {
    return real(node, service, hints, res);
  }
  const char* log = getenv("WSGATE_RESOLVE_LOG");
  if (log != NULL) {
    // One write(2) per line with O_APPEND: lines from several threads never interleave.
    char line[512];
    const int len = snprintf(line, sizeof(line), "%s:%s\n", node, service != NULL ? service : "");
    const int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && len > 0) {
      ssize_t ignored = write(fd, line, (size_t)len);
      (void)ignored;
    }
    if (fd >= 0) close(fd);
  }
  return real("127.0.0.1", service, hints, res);
}
