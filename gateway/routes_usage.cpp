// Routes: usage records, usage reports, effective settings (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> usage_routes() {
    return {};
}

}  // namespace tenancy::gateway
