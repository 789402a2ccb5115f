#ifndef VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#define VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#include <libvdeplug.h>

/// `vde_open` is a function-like macro, which Swift cannot import.
static inline VDECONN *cvdeplug_open(char *url, char *description, struct vde_open_args *args) {
    return vde_open(url, description, args);
}
#endif
