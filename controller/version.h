// The fleet-controller release this source builds (shown by --version and
// AdminService.GetServerInfo).
#ifndef FLEET_CONTROLLER_VERSION_H_
#define FLEET_CONTROLLER_VERSION_H_

namespace fleet::controller {

inline constexpr char kControllerVersion[] = "0.1.0";

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_VERSION_H_
