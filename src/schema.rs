// @generated automatically by Diesel CLI.

diesel::table! {
    audit_logs (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        actor_type -> Text,
        actor_id -> Nullable<Uuid>,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Uuid>,
        details -> Jsonb,
        ip_address -> Nullable<Inet>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    budgets (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        currency -> Text,
        hard_cap -> Numeric,
        reserved -> Numeric,
        spent -> Numeric,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    campaigns (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        start_at -> Nullable<Timestamptz>,
        end_at -> Nullable<Timestamptz>,
        budget_id -> Nullable<Uuid>,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    consents (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        customer_id -> Uuid,
        channel -> Text,
        purpose -> Text,
        granted -> Bool,
        occurred_at -> Timestamptz,
        source -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    customers (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        phone_e164 -> Nullable<Text>,
        status -> Text,
        attributes -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        erased_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    events (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        customer_id -> Nullable<Uuid>,
        event_type -> Text,
        properties -> Jsonb,
        occurred_at -> Timestamptz,
        source -> Text,
        idempotency_key -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    issuances (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        campaign_id -> Uuid,
        rule_id -> Uuid,
        customer_id -> Uuid,
        reward_id -> Uuid,
        budget_id -> Uuid,
        voucher_code_id -> Nullable<Uuid>,
        status -> Text,
        cost_amount -> Numeric,
        currency -> Text,
        idempotency_key -> Text,
        issued_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        redeemed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        hold_expires_at -> Nullable<Timestamptz>,
        reversed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    ledger_entries (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        budget_id -> Uuid,
        entry_type -> Text,
        amount -> Numeric,
        currency -> Text,
        ref_type -> Text,
        ref_id -> Uuid,
        batch_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        reopened -> Bool,
    }
}

diesel::table! {
    outbox_messages (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        topic -> Text,
        message_key -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        available_at -> Timestamptz,
        attempts -> Int4,
        delivered_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    reward_catalog (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        #[sql_name = "type"]
        type_ -> Text,
        cost_amount -> Numeric,
        currency -> Text,
        uses_codes -> Bool,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    rules (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        campaign_id -> Uuid,
        name -> Text,
        event_type -> Text,
        conditions -> Jsonb,
        reward_id -> Uuid,
        per_customer_limit -> Nullable<Int4>,
        global_limit -> Nullable<Int4>,
        issued_count -> Int4,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    staff_users (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        email -> Text,
        full_name -> Text,
        role -> Text,
        pwd_hash -> Text,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        country_code -> Nullable<Text>,
        default_ccy -> Text,
        theme -> Jsonb,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    voucher_codes (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        reward_id -> Uuid,
        code -> Text,
        status -> Text,
        issuance_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        issued_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    wa_sessions (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        wa_id -> Text,
        customer_id -> Nullable<Uuid>,
        phone_e164 -> Text,
        state -> Text,
        last_msg_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(audit_logs -> tenants (tenant_id));
diesel::joinable!(budgets -> tenants (tenant_id));
diesel::joinable!(campaigns -> tenants (tenant_id));
diesel::joinable!(customers -> tenants (tenant_id));
diesel::joinable!(outbox_messages -> tenants (tenant_id));
diesel::joinable!(reward_catalog -> tenants (tenant_id));
diesel::joinable!(staff_users -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_logs,
    budgets,
    campaigns,
    consents,
    customers,
    events,
    issuances,
    ledger_entries,
    outbox_messages,
    reward_catalog,
    rules,
    staff_users,
    tenants,
    voucher_codes,
    wa_sessions,
);
