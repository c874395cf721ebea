//! The API's routes as a closed set: what each path is called in metrics and which
//! statuses it can answer, so every `http_requests_total` series exists from start.

use hyper::StatusCode;

/// Routes as metric labels: a fixed set, so unknown paths cannot blow up cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Message,
    Batch,
    Health,
    Livez,
    Unknown,
}

impl Route {
    pub(super) const ALL: [Route; 5] = [
        Route::Message,
        Route::Batch,
        Route::Health,
        Route::Livez,
        Route::Unknown,
    ];

    /// The path a route answers on; `None` for the catch-all.
    pub(super) fn path(self) -> Option<&'static str> {
        match self {
            Route::Message => Some("/v1/messages"),
            Route::Batch => Some("/v1/messages/batch"),
            Route::Health => Some("/health"),
            Route::Livez => Some("/livez"),
            Route::Unknown => None,
        }
    }

    pub(super) fn of(path: &str) -> Route {
        Route::ALL
            .into_iter()
            .find(|route| route.path() == Some(path))
            .unwrap_or(Route::Unknown)
    }

    /// The `route` label: the path itself, or `other` for every unknown path.
    pub(super) fn label(self) -> &'static str {
        self.path().unwrap_or("other")
    }

    /// Every status `IngestApi::route` can answer on this route (a panic's 500 is
    /// answered by the server, not counted here).
    fn statuses(self) -> &'static [StatusCode] {
        match self {
            Route::Message | Route::Batch => &[
                StatusCode::ACCEPTED,
                StatusCode::BAD_REQUEST,
                StatusCode::UNAUTHORIZED,
                StatusCode::METHOD_NOT_ALLOWED,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            Route::Health => &[
                StatusCode::OK,
                StatusCode::METHOD_NOT_ALLOWED,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            Route::Livez => &[StatusCode::OK, StatusCode::METHOD_NOT_ALLOWED],
            Route::Unknown => &[StatusCode::NOT_FOUND],
        }
    }
}

/// Every `(route, status)` label pair of `http_requests_total`, so each series can be
/// exported at 0 from start.
pub(super) fn request_labels() -> impl Iterator<Item = (&'static str, &'static str)> {
    Route::ALL.into_iter().flat_map(|route| {
        route
            .statuses()
            .iter()
            .map(move |status| (route.label(), status.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_labels() {
        for route in Route::ALL {
            // A new variant does not compile here until it is added to ALL too.
            match route {
                Route::Message | Route::Batch | Route::Health | Route::Livez | Route::Unknown => {}
            }
            assert!(request_labels().any(|(label, _)| label == route.label()));
        }
        assert!(request_labels().any(|pair| pair == ("/v1/messages", "202")));
        assert!(request_labels().any(|pair| pair == ("other", "404")));
    }

    #[test]
    fn route_labels_are_a_closed_set() {
        assert_eq!(Route::of("/v1/messages").label(), "/v1/messages");
        assert_eq!(Route::of("/v1/messages/").label(), "other");
        assert_eq!(Route::of("/etc/passwd").label(), "other");
        assert_eq!(Route::of("other"), Route::Unknown);
        for route in Route::ALL {
            if let Some(path) = route.path() {
                assert_eq!(Route::of(path), route, "{path} routes back to its route");
            }
        }
    }
}
