// Routes: login, sub-user login, MFA verify, logout, switch (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> auth_routes() {
    return {};
}

}  // namespace tenancy::gateway
