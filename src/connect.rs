//! Opening a connection. diesel-async's own `establish` sends its session
//! set-up (`SET TIME ZONE`, `SET CLIENT_ENCODING`) as statements prepared in
//! one round trip and run in the next; behind PgBouncer in transaction mode
//! the second may reach another server, which does not know the statement.
//! Here the set-up runs inside one transaction, which PgBouncer keeps on one
//! server. PgBouncer then carries the two settings to whichever server the
//! client gets next, as it does for every client.

use diesel::ConnectionError;
use diesel::result::Error as DieselError;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

pub(crate) async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| ConnectionError::BadConnection(described(&e)))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a database connection ended");
        }
    });
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| setup_failed(described(&e)))?;
    let mut conn = AsyncPgConnection::try_from(client).await?;
    conn.batch_execute("COMMIT")
        .await
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// The server's own message when there is one ("database ... does not
/// exist"), not the driver's bare "db error".
fn described(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => err.to_string(),
    }
}

fn setup_failed(message: String) -> ConnectionError {
    ConnectionError::CouldntSetupConfiguration(DieselError::DatabaseError(
        diesel::result::DatabaseErrorKind::UnableToSendCommand,
        Box::new(message),
    ))
}
