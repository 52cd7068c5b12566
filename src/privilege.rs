//! [`LoginPrivilege`]: what lets a login leave tenant isolation, as
//! [`crate::Store::connect`] reports it (the check is in `login.rs`).

use serde::Serialize;

/// A way out of tenant isolation that a login has, itself or through a role
/// it can `SET ROLE` to (membership counts whether or not it inherits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "privilege", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginPrivilege {
    /// Superusers pass every check.
    Superuser { role: String },
    /// `BYPASSRLS` ignores every policy.
    BypassRls { role: String },
    /// `CREATEROLE` can grant itself any non-superuser role, the owner's too.
    CreateRole { role: String },
    /// A predefined role that reads or writes past privileges
    /// (`pg_read_all_data`, `pg_write_all_data`) or reaches the server's
    /// files and programs, and with them the guard key.
    PredefinedRole { role: String },
    /// Owners may turn row-level security off, redefine the crate's
    /// functions, or drop and replace its tables. `object` is, for example,
    /// `table public.customers` or `schema loyalty`.
    Owner { role: String, object: String },
    /// `CREATE` on a schema lets a look-alike of a built-in function, put
    /// first on the search path, run inside the crate's `SECURITY DEFINER`
    /// functions as their owner.
    Create { role: String, schema: String },
    /// `TEMPORARY` on the database, granted to the role itself (`migrate()`
    /// revokes PUBLIC's): a temporary table may shadow a crate table.
    Temporary { role: String },
}

impl std::fmt::Display for LoginPrivilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginPrivilege::Superuser { role } => write!(f, "{role} is a superuser"),
            LoginPrivilege::BypassRls { role } => write!(f, "{role} has BYPASSRLS"),
            LoginPrivilege::CreateRole { role } => write!(f, "{role} has CREATEROLE"),
            LoginPrivilege::PredefinedRole { role } => write!(f, "{role} is reachable"),
            LoginPrivilege::Owner { role, object } => write!(f, "{role} owns {object}"),
            LoginPrivilege::Create { role, schema } => {
                write!(f, "{role} may CREATE in schema {schema}")
            }
            LoginPrivilege::Temporary { role } => {
                write!(f, "{role} may create temporary tables")
            }
        }
    }
}
