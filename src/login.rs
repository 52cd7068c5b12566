//! The check [`crate::Store::connect`] makes of its login: tenant isolation
//! holds only for a login that cannot leave it, whatever SQL it sends.

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::{Error, Result};
use crate::privilege::LoginPrivilege;

/// One row per privilege the session's login holds, itself or through a role
/// it is a member of (which includes PUBLIC's grants, for `CREATE`).
const PRIVILEGES: &str = "\
WITH reachable AS (
    SELECT oid, rolname, rolsuper, rolbypassrls, rolcreaterole
      FROM pg_catalog.pg_roles
     WHERE pg_catalog.pg_has_role(session_user, oid, 'MEMBER')
), crate_schemas AS (
    SELECT oid, nspname, nspowner FROM pg_catalog.pg_namespace
     WHERE nspname IN ('public', 'loyalty', 'loyalty_secret')
)
SELECT rolname::text AS role, 'superuser' AS privilege, NULL AS object
  FROM reachable WHERE rolsuper
UNION ALL
SELECT rolname::text, 'bypassrls', NULL FROM reachable WHERE rolbypassrls
UNION ALL
SELECT rolname::text, 'createrole', NULL FROM reachable WHERE rolcreaterole
UNION ALL
SELECT rolname::text, 'predefined_role', NULL FROM reachable
 WHERE rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                   'pg_write_server_files', 'pg_execute_server_program')
UNION ALL
SELECT r.rolname::text, 'owner', 'database ' || d.datname
  FROM pg_catalog.pg_database d JOIN reachable r ON r.oid = d.datdba
 WHERE d.datname = pg_catalog.current_database()
UNION ALL
SELECT r.rolname::text, 'owner', 'schema ' || s.nspname
  FROM crate_schemas s JOIN reachable r ON r.oid = s.nspowner
UNION ALL
SELECT r.rolname::text, 'owner', 'table ' || s.nspname || '.' || c.relname
  FROM pg_catalog.pg_class c
  JOIN crate_schemas s ON s.oid = c.relnamespace
  JOIN reachable r ON r.oid = c.relowner
UNION ALL
SELECT r.rolname::text, 'owner', 'function ' || p.oid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_proc p
  JOIN crate_schemas s ON s.oid = p.pronamespace
  JOIN reachable r ON r.oid = p.proowner
UNION ALL
SELECT r.rolname::text, 'temporary', NULL
  FROM pg_catalog.pg_database d
  CROSS JOIN LATERAL pg_catalog.aclexplode(d.datacl) AS granted
  JOIN reachable r ON r.oid = granted.grantee
 WHERE d.datname = pg_catalog.current_database() AND granted.privilege_type = 'TEMPORARY'
UNION ALL
SELECT r.rolname::text, 'create', n.nspname::text
  FROM pg_catalog.pg_namespace n CROSS JOIN reachable r
 WHERE n.nspname NOT LIKE 'pg\\_%temp\\_%'
   AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE')
ORDER BY 1, 2, 3";

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    privilege: String,
    #[diesel(sql_type = Nullable<Text>)]
    object: Option<String>,
}

impl From<Held> for LoginPrivilege {
    fn from(held: Held) -> Self {
        let Held {
            role,
            privilege,
            object,
        } = held;
        let object = object.unwrap_or_default();
        match privilege.as_str() {
            "superuser" => LoginPrivilege::Superuser { role },
            "bypassrls" => LoginPrivilege::BypassRls { role },
            "createrole" => LoginPrivilege::CreateRole { role },
            "predefined_role" => LoginPrivilege::PredefinedRole { role },
            "owner" => LoginPrivilege::Owner { role, object },
            "temporary" => LoginPrivilege::Temporary { role },
            _ => LoginPrivilege::Create {
                role,
                schema: object,
            },
        }
    }
}

/// Refuses, with [`Error::PrivilegedLogin`], a login that holds any
/// [`LoginPrivilege`].
///
/// In a transaction of its own, like every statement sent outside a guard,
/// so that PgBouncer in transaction mode runs each statement's two round
/// trips (prepare, then execute) on one server.
pub(crate) async fn ensure_unprivileged(conn: &mut AsyncPgConnection) -> Result<()> {
    let (login, held) = conn
        .build_transaction()
        .read_only()
        .run(async |conn| {
            let held: Vec<Held> = diesel::sql_query(PRIVILEGES).load(conn).await?;
            let login: String = diesel::select(diesel::dsl::sql::<Text>("session_user::text"))
                .get_result(conn)
                .await?;
            Ok::<_, diesel::result::Error>((login, held))
        })
        .await?;
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::PrivilegedLogin {
        login,
        privileges: held.into_iter().map(LoginPrivilege::from).collect(),
    })
}
