//! One value per stored object in this process, shared by every manager over that object.
//!
//! Managers are cheap and often made per call (`S3Backend::manager`), so what must be common
//! to all the managers over one object in a process (the update queue, the release gate)
//! lives here, found by the object's [`crate::Store::identity`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// A registry of `T`s by object identity. Entries are weak, so an object's value goes when
/// its last manager does (swept on the next registration).
pub(crate) struct PerObject<T> {
    values: LazyLock<Mutex<HashMap<String, Weak<T>>>>,
}

impl<T: Default> PerObject<T> {
    /// An empty registry, for a `static`.
    pub(crate) const fn new() -> Self {
        PerObject {
            values: LazyLock::new(empty),
        }
    }

    /// The value shared for `identity`, made on first use; a value of its own when the store
    /// has no identity (its object cannot be told apart from others).
    pub(crate) fn for_object(&self, identity: Option<String>) -> Arc<T> {
        let Some(identity) = identity else {
            return Arc::new(T::default());
        };
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = values.get(&identity).and_then(Weak::upgrade) {
            return existing;
        }
        values.retain(|_, value| value.strong_count() > 0);
        let value = Arc::new(T::default());
        values.insert(identity, Arc::downgrade(&value));
        value
    }
}

fn empty<T>() -> Mutex<HashMap<String, Weak<T>>> {
    Mutex::new(HashMap::new())
}
