// Routes: per-account security settings (PHI, recording, encryption, audit log) (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> security_routes() {
    return {};
}

}  // namespace tenancy::gateway
