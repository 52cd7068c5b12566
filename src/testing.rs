//! Test databases (feature `testing`), for this crate's tests and for tests of
//! services built on it.
//!
//! [`TestDb::new`] gives each test its own freshly migrated database, cloned
//! from a template that is migrated once per server and migration set, so
//! tests run in parallel and start fast. The database is dropped when the
//! `TestDb` is.
//!
//! Every test database uses the production login model (`docs/security.md`):
//! it is owned by the migrator login `loyalty_test_migrator`, and
//! [`TestDb::store`] logs in as `loyalty_test_service`, which owns nothing
//! and is a `NOINHERIT` member of `loyalty_app` only. Both roles are created
//! on the server the first time they are needed (roles are cluster-wide).
//! Assertions that must see past row-level security use
//! [`TestDb::admin_connection`], a superuser.
//!
//! The server is `DATABASE_URL` when set (its user needs `CREATEDB`).
//! `LOYALTY_TEST_CITUS`, the URL of a Citus coordinator's database as a
//! superuser, selects Citus mode: every test shares that one database,
//! migrated and distributed ([`Store::distribute`]) once, and keeps apart by
//! making tenants of its own. Its nodes must already have the three roles,
//! with `loyalty_app` allowed to log in and the database owned by the
//! migrator (`scripts/test-citus.sh` prepares such a cluster).
//! Otherwise a throwaway PostgreSQL is started from the machine's binaries
//! (`initdb` and `postgres` on `PATH`, under `pg_config --bindir`, or under
//! `/usr/lib/postgresql/*/bin`), as the `postgres` or `nobody` user when the
//! tests run as root, and it is shut down and deleted when the test process
//! exits.
//!
//! ```no_run
//! # async fn demo() {
//! let db = loyalty_store::testing::TestDb::new().await;
//! let store = db.store();
//! # }
//! ```

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use url::Url;

use crate::config::Config;
use crate::store::Store;

mod campaign;

pub use campaign::{CampaignBuilder, CampaignFixture};

/// A migrated database of its own for one test; dropped with this value.
/// In Citus mode, the one distributed database every test shares.
pub struct TestDb {
    store: Store,
    name: String,
    shared: bool,
}

/// The migrator: owns every test database and what the migrations create.
pub const MIGRATOR_LOGIN: &str = "loyalty_test_migrator";
/// The service login: owns nothing, a `NOINHERIT` member of `loyalty_app`.
pub const SERVICE_LOGIN: &str = "loyalty_test_service";

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

// Migrations change the template's name, so an edited migration never reuses
// a stale template on a long-lived server; so does the suffix, which changes
// with what the harness itself does to the template (roles, revokes).
const TEMPLATE: &str = concat!("loyalty_tpl_", env!("LOYALTY_MIGRATIONS_HASH"), "_h2");
const TEMPLATE_LOCK_KEY: i64 = 0x6c6f_7961_6c74_7932;

impl TestDb {
    /// Creates a migrated database, or panics with what to install or set.
    pub async fn new() -> TestDb {
        if server().citus {
            return Self::distributed().await;
        }
        ensure_roles_and_template(&server().admin_url).await;
        let db = Self::create(&format!("TEMPLATE {TEMPLATE}")).await;
        // What a service runs at start-up: it finds nothing to migrate, and
        // puts back what a clone does not inherit (database privileges).
        if let Err(e) = db.store.migrate().await {
            panic!("migrating test database {}: {e}", db.name);
        }
        db
    }

    /// The store an example program runs on: the one `DATABASE_URL` (and
    /// `MIGRATOR_DATABASE_URL`) name, through [`Config::from_env`], when
    /// set; otherwise an empty throwaway database, kept as long as the
    /// returned `TestDb` lives, so an example runs on a fresh machine.
    pub async fn store_from_env_or_throwaway() -> crate::Result<(Store, Option<TestDb>)> {
        if std::env::var("DATABASE_URL").is_ok() {
            return Ok((Store::connect(Config::from_env()?).await?, None));
        }
        println!("DATABASE_URL is not set; using a throwaway database.");
        let throwaway = TestDb::empty().await;
        Ok((throwaway.store().clone(), Some(throwaway)))
    }

    /// Creates a database with no migrations applied, for testing migrations.
    pub async fn empty() -> TestDb {
        assert!(
            !server().citus,
            "TestDb::empty() needs a server that can create databases; Citus mode shares one"
        );
        ensure_roles_and_template(&server().admin_url).await;
        Self::create("").await
    }

    /// Citus mode: the coordinator's database, migrated and distributed
    /// once per test process (the migration lock serialises processes).
    /// Tests keep apart by making tenants of their own.
    async fn distributed() -> TestDb {
        static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let server = server();
        let name = Url::parse(&server.admin_url)
            .expect("LOYALTY_TEST_CITUS is a URL")
            .path()
            .trim_start_matches('/')
            .to_owned();
        let store = Store::connect(service_config(&server.admin_url, &name))
            .await
            .unwrap_or_else(|e| panic!("connecting to the Citus database {name}: {e}"));
        READY
            .get_or_init(|| async {
                if let Err(e) = store.migrate().await {
                    panic!("migrating the Citus database {name}: {e}");
                }
                if let Err(e) = store.distribute().await {
                    panic!("distributing the Citus database {name}: {e}");
                }
            })
            .await;
        TestDb {
            store,
            name,
            shared: true,
        }
    }

    async fn create(options: &str) -> TestDb {
        let server = server();
        let name = format!("loyalty_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&server.admin_url).await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} {options} OWNER {MIGRATOR_LOGIN}"
            ))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let store = Store::connect(service_config(&server.admin_url, &name))
            .await
            .unwrap_or_else(|e| panic!("connecting to test database {name}: {e}"));
        TestDb {
            store,
            name,
            shared: false,
        }
    }

    /// A store on this database as the service login, with the default
    /// configuration.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration [`TestDb::store`] was built from: the service
    /// login, with the migrator's URL. For a differently configured
    /// [`Store`].
    pub fn config(&self) -> Config {
        service_config(&server().admin_url, &self.name)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL as the service login, for tools.
    pub fn url(&self) -> String {
        login_url(&server().admin_url, &self.name, SERVICE_LOGIN)
    }

    /// The database's URL as the migrator, which owns the crate's objects
    /// (through PgBouncer, as [`TestDb::config`] says, when one is set).
    pub fn migrator_url(&self) -> String {
        self.config()
            .migrator_url
            .expect("the test configuration names the migrator")
    }

    /// The database's URL as a superuser.
    pub fn superuser_url(&self) -> String {
        database_url(&server().admin_url, &self.name)
    }

    /// A connection to this database as a superuser, for assertions that
    /// must see past row-level security and for setting up what no login of
    /// the crate may do.
    pub async fn admin_connection(&self) -> AsyncPgConnection {
        admin_connection(&self.superuser_url()).await
    }

    /// The URL of the server's maintenance database, as a superuser.
    pub fn admin_url(&self) -> &str {
        &server().admin_url
    }
}

/// The service login's configuration. With `LOYALTY_TEST_PGBOUNCER` set to
/// the `host:port` of a PgBouncer in transaction mode in front of the test
/// server, both logins go through it, as a deployment behind PgBouncer
/// would, and the service's statement cache is off.
fn service_config(admin_url: &str, database: &str) -> Config {
    let pgbouncer = std::env::var("LOYALTY_TEST_PGBOUNCER")
        .ok()
        .filter(|address| !address.is_empty());
    let url = |login: &str| {
        let mut url = Url::parse(&login_url(admin_url, database, login))
            .expect("the test server's URL is a URL");
        if let Some(address) = &pgbouncer {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .expect("LOYALTY_TEST_PGBOUNCER is host:port");
            url.set_host(Some(host)).expect("a host name");
            url.set_port(Some(port)).expect("a port");
        }
        String::from(url)
    };
    Config::from_url(&url(SERVICE_LOGIN))
        .expect("the test server's URL is a valid configuration")
        .with_prepared_statements(pgbouncer.is_none())
        .with_migrator_url(url(MIGRATOR_LOGIN))
}

fn login_url(admin_url: &str, database: &str, login: &str) -> String {
    let mut url = Url::parse(&database_url(admin_url, database)).expect("a database URL");
    url.set_username(login)
        .expect("a postgres URL has a user name");
    // Trust authentication is assumed for the test logins.
    let _ = url.set_password(None);
    url.into()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.shared {
            return;
        }
        let admin_url = server().admin_url.clone();
        let name = std::mem::take(&mut self.name);
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            runtime.block_on(async {
                let mut admin = admin_connection(&admin_url).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop a test database: {e}");
        }
    }
}

struct Server {
    admin_url: String,
    /// Citus mode: `admin_url` is the coordinator's distributed database.
    citus: bool,
    // Holding the supervisor's stdin open keeps a throwaway server alive; the
    // OS closes it when the test process exits, and the supervisor then stops
    // the server and deletes its files.
    _supervisor: Option<Child>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let from_env = |name| std::env::var(name).ok().filter(|url| !url.is_empty());
        if let Some(url) = from_env("LOYALTY_TEST_CITUS") {
            return Server {
                admin_url: url,
                citus: true,
                _supervisor: None,
            };
        }
        match from_env("DATABASE_URL") {
            Some(url) => Server {
                admin_url: url,
                citus: false,
                _supervisor: None,
            },
            None => start_throwaway_server(),
        }
    })
}

async fn admin_connection(url: &str) -> AsyncPgConnection {
    // A throwaway server may still be starting up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match AsyncPgConnection::establish(url).await {
            Ok(conn) => return conn,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "test server not ready yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "cannot connect to the test PostgreSQL server at {url}: {e}\n\
                 Set DATABASE_URL to a server whose user may CREATE DATABASE, or \
                 install PostgreSQL (Debian: apt-get install -y postgresql)."
            ),
        }
    }
}

/// The test logins. `loyalty_app` is made here too, so the migrator needs
/// no `CREATEROLE`, as in a deployment that follows `docs/security.md`.
const ROLES: &str = "DO $$ BEGIN \
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_app') THEN \
        CREATE ROLE loyalty_app NOLOGIN NOBYPASSRLS; \
    END IF; \
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_test_migrator') THEN \
        CREATE ROLE loyalty_test_migrator LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS; \
    END IF; \
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_test_service') THEN \
        CREATE ROLE loyalty_test_service LOGIN NOINHERIT NOSUPERUSER NOCREATEROLE \
            NOBYPASSRLS IN ROLE loyalty_app; \
    END IF; \
    END $$";

const REVOKE_LARGE_OBJECTS: &str = "REVOKE EXECUTE ON FUNCTION lo_create(oid), \
    lo_creat(integer), lo_from_bytea(oid, bytea), lo_import(text), lo_import(text, oid) \
    FROM PUBLIC";

async fn ensure_roles_and_template(admin_url: &str) {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let mut admin = admin_connection(admin_url).await;
            // Other test processes may be making the same roles and template.
            run(
                &mut admin,
                &format!("SELECT pg_advisory_lock({TEMPLATE_LOCK_KEY})"),
            )
            .await;
            run(&mut admin, ROLES).await;
            let exists: bool = diesel::select(diesel::dsl::exists(
                pg_database::table.filter(pg_database::datname.eq(TEMPLATE)),
            ))
            .get_result(&mut admin)
            .await
            .expect("looking up the template database");
            if !exists {
                build_template(&mut admin, admin_url).await;
            }
            run(
                &mut admin,
                &format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK_KEY})"),
            )
            .await;
        })
        .await;
}

async fn build_template(admin: &mut AsyncPgConnection, admin_url: &str) {
    let building = format!("{TEMPLATE}_building");
    run(
        admin,
        &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
    )
    .await;
    run(
        admin,
        &format!("CREATE DATABASE {building} OWNER {MIGRATOR_LOGIN}"),
    )
    .await;
    let store = Store::connect(service_config(admin_url, &building))
        .await
        .expect("connecting to the template database");
    if let Err(e) = store.migrate().await {
        panic!("migrating the template database: {e}");
    }
    drop(store);
    // The administrator's step of docs/security.md, which clones inherit.
    let mut template = admin_connection(&database_url(admin_url, &building)).await;
    run(&mut template, REVOKE_LARGE_OBJECTS).await;
    drop(template);
    // The migration connection may still be closing on the server side.
    run(
        admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}'"
        ),
    )
    .await;
    run(
        admin,
        &format!("ALTER DATABASE {building} RENAME TO {TEMPLATE}"),
    )
    .await;
}

async fn run(conn: &mut AsyncPgConnection, sql: &str) {
    if let Err(e) = conn.batch_execute(sql).await {
        panic!("test harness statement failed: {sql}: {e}");
    }
}

diesel::table! {
    pg_database (datname) {
        datname -> Text,
    }
}

fn database_url(admin_url: &str, database: &str) -> String {
    let mut url = Url::parse(admin_url).expect("DATABASE_URL must be a URL");
    url.set_path(database);
    url.into()
}

fn start_throwaway_server() -> Server {
    let bin = find_postgres_binaries().unwrap_or_else(|| {
        panic!(
            "No PostgreSQL server binaries (initdb, postgres) were found on PATH, \
             under `pg_config --bindir`, or under /usr/lib/postgresql/*/bin.\n\
             Install PostgreSQL (Debian: apt-get install -y postgresql), or set \
             DATABASE_URL to a server whose user may CREATE DATABASE."
        )
    });
    let port = free_port();
    let dir = tempfile::Builder::new()
        .prefix("loyalty-store-pg-")
        .tempdir()
        .expect("a temporary directory for the test server")
        .keep();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SUPERVISOR)
        .env("PGBIN", &bin)
        .env("PGDIR", &dir)
        .env("PGPORT", port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if running_as_root() {
        // initdb refuses to run as root.
        let (uid, gid) = unprivileged_user();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .expect("handing the test server directory to an unprivileged user");
        std::os::unix::process::CommandExt::uid(&mut command, uid);
        std::os::unix::process::CommandExt::gid(&mut command, gid);
    }
    let mut child = command
        .spawn()
        .expect("starting the test server supervisor");
    let stdout = child.stdout.take().expect("supervisor stdout");
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "started");
    if !started {
        panic!(
            "the throwaway PostgreSQL server in {} did not start; see the log above",
            dir.display()
        );
    }
    Server {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        citus: false,
        _supervisor: Some(child),
    }
}

// fsync and friends are off: a test server's data is worthless after a crash.
const SUPERVISOR: &str = r#"
set -u
if ! "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust --no-sync >"$PGDIR/initdb.log" 2>&1; then
    cat "$PGDIR/initdb.log" >&2
    exit 1
fi
"$PGBIN/postgres" -D "$PGDIR/data" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$PGDIR" -c max_connections=400 -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off >"$PGDIR/server.log" 2>&1 &
server=$!
echo started
read -r _ || true
kill -INT "$server"
wait "$server"
rm -rf "$PGDIR"
"#;

/// A PostgreSQL client program (`pg_dump`, `psql`, `pgbench`, ...): from the
/// directory of the server binaries when one is found, else from `PATH`.
pub fn pg_tool(name: &str) -> PathBuf {
    find_postgres_binaries()
        .map(|dir| dir.join(name))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn find_postgres_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    // Newest major version first.
    debian.sort_by_key(|dir| {
        std::cmp::Reverse(
            dir.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .into_iter()
        .chain(from_pg_config)
        .chain(debian)
        .find(|dir| has_both(dir))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free local port for the test server")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn unprivileged_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    lookup("postgres")
        .or_else(|| lookup("nobody"))
        .unwrap_or((65534, 65534))
}
