#ifndef VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#define VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#include <libvdeplug.h>
#include <signal.h>
#include <string.h>

/// `vde_open` is a function-like macro, which Swift cannot import.
static inline VDECONN *cvdeplug_open(char *url, char *description, struct vde_open_args *args) {
    return vde_open(url, description, args);
}

static void cvdeplug_ignore_signal(int number) { (void)number; }

/// Installs a handler for `number` that does nothing, without SA_RESTART: the signal, sent to a
/// thread blocked in `vde_open` (its connect or its recv of the switch's reply), makes that call
/// fail with EINTR, and libvdeplug then closes its sockets and returns NULL. Returns sigaction's result.
static inline int cvdeplug_install_interrupt_handler(int number) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = cvdeplug_ignore_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    return sigaction(number, &action, NULL);
}
#endif
