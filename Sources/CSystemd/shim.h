#ifndef VDE_SUPERVISOR_CSYSTEMD_SHIM_H
#define VDE_SUPERVISOR_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#endif
