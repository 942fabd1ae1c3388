// Routes: API keys of an account (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> api_key_routes() {
    return {};
}

}  // namespace tenancy::gateway
