//! Row-level security and privileges of the chat tables: who sees and who may do what.
//! Every policy is tested from both sides: the member who may, and the outsider who may not.

use ripple_tests::{fresh_db, TestDb};
use uuid::Uuid;

struct Direct {
    db: TestDb,
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    conv: Uuid,
    msg: Uuid,
}

/// Alice and Bob talk directly; Carol is a signed-in outsider.
async fn direct_chat() -> Direct {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let carol = db.create_user("Carol").await;
    let conv: Uuid = db
        .as_user(alice)
        .query_one("select public.start_direct_conversation($1)", &[&bob])
        .await
        .get(0);
    let msg: Uuid = db
        .as_user(alice)
        .query_one("select (public.send_message($1, 'hello bob')).id", &[&conv])
        .await
        .get(0);
    db.as_user(alice)
        .query("select public.react($1, '👍')", &[&msg])
        .await;
    Direct {
        db,
        alice,
        bob,
        carol,
        conv,
        msg,
    }
}

#[tokio::test]
async fn members_see_their_conversation_and_an_outsider_sees_no_row_of_it() {
    let d = direct_chat().await;
    for (user, expected) in [(d.alice, 1i64), (d.bob, 1), (d.carol, 0)] {
        let s = d.db.as_user(user);
        for table in [
            "public.conversations",
            "public.messages",
            "public.message_reactions",
        ] {
            let n: i64 = s
                .query_one(&format!("select count(*) from {table}"), &[])
                .await
                .get(0);
            assert_eq!(n, expected, "{table} rows visible to user {user}");
        }
        let members: i64 = s
            .query_one("select count(*) from public.conversation_members", &[])
            .await
            .get(0);
        assert_eq!(members, 2 * expected, "member rows visible to {user}");
    }
    // Not even by id.
    let rows =
        d.db.as_user(d.carol)
            .query(
                "select id from public.conversations where id = $1",
                &[&d.conv],
            )
            .await;
    assert!(rows.is_empty());
}

#[tokio::test]
async fn anon_reads_nothing_at_all() {
    let d = direct_chat().await;
    for table in [
        "public.profiles",
        "public.conversations",
        "public.messages",
        "public.conversation_members",
        "public.message_reactions",
    ] {
        let (code, _) =
            d.db.as_anon()
                .query_err(&format!("select * from {table}"), &[])
                .await;
        assert_eq!(code, "42501", "anon must have no privilege on {table}");
    }
    let (code, _) =
        d.db.as_anon()
            .query_err("select public.unread_counts()", &[])
            .await;
    assert_eq!(code, "42501", "anon may call no chat function");
}

#[tokio::test]
async fn an_outsider_cannot_send_into_a_conversation() {
    let d = direct_chat().await;
    let (code, msg) =
        d.db.as_user(d.carol)
            .query_err("select public.send_message($1, 'intruding')", &[&d.conv])
            .await;
    assert_eq!(code, "42501", "{msg}");
    // Writing the table directly is refused by the policy as well.
    let (code, _) = d
        .db
        .as_user(d.carol)
        .query_err(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, 'x')",
            &[&d.conv, &d.carol],
        )
        .await;
    assert_eq!(code, "42501");
    let n: i64 =
        d.db.client
            .query_one(
                "select count(*) from public.messages where conversation_id = $1",
                &[&d.conv],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 1, "nothing was written");
}

#[tokio::test]
async fn a_member_cannot_send_as_someone_else_or_as_the_system() {
    let d = direct_chat().await;
    let (code, _) = d
        .db
        .as_user(d.bob)
        .query_err(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, 'forged')",
            &[&d.conv, &d.alice],
        )
        .await;
    assert_eq!(code, "42501");
    let (code, _) =
        d.db.as_user(d.bob)
            .query_err(
                "select public.send_message($1, 'sys', 'system')",
                &[&d.conv],
            )
            .await;
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn an_outsider_cannot_join_a_conversation_by_inserting_a_membership() {
    let d = direct_chat().await;
    let (code, _) = d
        .db
        .as_user(d.carol)
        .query_err(
            "insert into public.conversation_members (conversation_id, user_id) values ($1, $2)",
            &[&d.conv, &d.carol],
        )
        .await;
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn a_member_cannot_edit_or_delete_anothers_message_in_a_direct_chat() {
    let d = direct_chat().await;
    let bob = d.db.as_user(d.bob);
    let (code, _) = bob
        .query_err(
            "select public.edit_message($1, 'changed by bob')",
            &[&d.msg],
        )
        .await;
    assert_eq!(
        code, "42501",
        "Bob sees the message but it is not his to edit"
    );
    let (code, _) = bob
        .query_err("select public.delete_message($1)", &[&d.msg])
        .await;
    assert_eq!(code, "42501");
    let n = bob
        .query(
            "update public.messages set body = 'direct write' where id = $1 returning id",
            &[&d.msg],
        )
        .await;
    assert!(n.is_empty(), "a direct UPDATE touches no row");
    let body: Option<String> =
        d.db.client
            .query_one("select body from public.messages where id = $1", &[&d.msg])
            .await
            .unwrap()
            .get(0);
    assert_eq!(body.as_deref(), Some("hello bob"));
}

#[tokio::test]
async fn only_body_and_deleted_at_are_writable_by_the_sender() {
    let d = direct_chat().await;
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err(
                "update public.messages set kind = 'image' where id = $1",
                &[&d.msg],
            )
            .await;
    assert_eq!(code, "42501", "column privilege");
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err(
                "update public.messages set created_at = now() - interval '1 day' where id = $1",
                &[&d.msg],
            )
            .await;
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn nobody_can_hard_delete_a_message() {
    let d = direct_chat().await;
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err("delete from public.messages where id = $1", &[&d.msg])
            .await;
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn outsiders_cannot_react_and_users_remove_only_their_own_reactions() {
    let d = direct_chat().await;
    let (code, _) =
        d.db.as_user(d.carol)
            .query_err("select public.react($1, '🔥')", &[&d.msg])
            .await;
    assert_eq!(code, "P0002", "Carol cannot even see the message");
    let (code, _) = d
        .db
        .as_user(d.carol)
        .query_err(
            "insert into public.message_reactions (message_id, conversation_id, user_id, emoji) values ($1, $2, $3, '🔥')",
            &[&d.msg, &d.conv, &d.carol],
        )
        .await;
    assert_eq!(code, "42501");
    // Bob cannot remove Alice's reaction.
    let gone =
        d.db.as_user(d.bob)
            .query(
                "delete from public.message_reactions where message_id = $1 returning user_id",
                &[&d.msg],
            )
            .await;
    assert!(gone.is_empty());
    d.db.as_user(d.alice)
        .query("select public.unreact($1, '👍')", &[&d.msg])
        .await;
    let n: i64 =
        d.db.client
            .query_one("select count(*) from public.message_reactions", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn profiles_are_readable_when_signed_in_and_writable_only_by_their_owner() {
    let d = direct_chat().await;
    let n: i64 =
        d.db.as_user(d.carol)
            .query_one("select count(*) from public.profiles", &[])
            .await
            .get(0);
    assert_eq!(n, 3);
    let changed =
        d.db.as_user(d.carol)
            .query(
                "update public.profiles set display_name = 'pwned' where id = $1 returning id",
                &[&d.alice],
            )
            .await;
    assert!(changed.is_empty());
    let mine =
        d.db.as_user(d.carol)
            .query(
                "update public.profiles set display_name = 'Caroline' where id = $1 returning id",
                &[&d.carol],
            )
            .await;
    assert_eq!(mine.len(), 1);
    let (code, _) =
        d.db.as_user(d.carol)
            .query_err(
                "update public.profiles set last_seen_at = now() where id = $1",
                &[&d.carol],
            )
            .await;
    assert_eq!(
        code, "42501",
        "last_seen_at is set by the gateway, not by users"
    );
    // A user may create their own profile, and no one else's.
    let db = &d.db;
    let newbie = Uuid::new_v4();
    let (code, _) = db
        .as_user(newbie)
        .query_err(
            "insert into public.profiles (id, display_name) values ($1, 'Mallory')",
            &[&d.alice],
        )
        .await;
    assert_eq!(code, "42501");
    db.as_user(newbie)
        .query(
            "insert into public.profiles (id, display_name) values ($1, 'Newbie')",
            &[&newbie],
        )
        .await;
}

#[tokio::test]
async fn the_internal_direct_key_column_is_hidden_from_users() {
    let d = direct_chat().await;
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err("select direct_key from public.conversations", &[])
            .await;
    assert_eq!(code, "42501");
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err("select * from public.conversations", &[])
            .await;
    assert_eq!(code, "42501", "select * includes the hidden column");
    let ok =
        d.db.as_user(d.alice)
            .query(
                "select id, kind, last_message_preview from public.conversations",
                &[],
            )
            .await;
    assert_eq!(ok.len(), 1);
}

struct Group {
    db: TestDb,
    owner: Uuid,
    admin: Uuid,
    member: Uuid,
    outsider: Uuid,
    conv: Uuid,
}

async fn group_chat() -> Group {
    let db = fresh_db().await;
    let owner = db.create_user("Olga").await;
    let admin = db.create_user("Adam").await;
    let member = db.create_user("Mia").await;
    let outsider = db.create_user("Otto").await;
    let conv: Uuid = db
        .as_user(owner)
        .query_one(
            "select public.create_group_conversation('Team', $1)",
            &[&vec![admin, member]],
        )
        .await
        .get(0);
    db.as_user(owner)
        .query(
            "update public.conversation_members set role = 'admin' where conversation_id = $1 and user_id = $2",
            &[&conv, &admin],
        )
        .await;
    Group {
        db,
        owner,
        admin,
        member,
        outsider,
        conv,
    }
}

async fn role_of(db: &TestDb, conv: Uuid, user: Uuid) -> Option<String> {
    db.client
        .query_opt(
            "select role::text from public.conversation_members where conversation_id = $1 and user_id = $2",
            &[&conv, &user],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn only_owners_and_admins_add_members() {
    let g = group_chat().await;
    let newcomer = g.db.create_user("Nina").await;
    let (code, _) =
        g.db.as_user(g.member)
            .query_err(
                "select public.add_conversation_member($1, $2)",
                &[&g.conv, &newcomer],
            )
            .await;
    assert_eq!(code, "42501");
    let (code, _) = g
        .db
        .as_user(g.member)
        .query_err(
            "insert into public.conversation_members (conversation_id, user_id) values ($1, $2)",
            &[&g.conv, &newcomer],
        )
        .await;
    assert_eq!(code, "42501", "the policy refuses the direct insert too");
    let (code, _) =
        g.db.as_user(g.outsider)
            .query_err(
                "select public.add_conversation_member($1, $2)",
                &[&g.conv, &g.outsider],
            )
            .await;
    assert_eq!(code, "P0002", "an outsider does not learn the group exists");
    assert_eq!(role_of(&g.db, g.conv, newcomer).await, None);

    g.db.as_user(g.admin)
        .query(
            "select public.add_conversation_member($1, $2)",
            &[&g.conv, &newcomer],
        )
        .await;
    assert_eq!(
        role_of(&g.db, g.conv, newcomer).await.as_deref(),
        Some("member")
    );
    let (code, _) = g
        .db
        .as_user(g.admin)
        .query_err(
            "insert into public.conversation_members (conversation_id, user_id, role) values ($1, $2, 'owner')",
            &[&g.conv, &g.outsider],
        )
        .await;
    assert_eq!(code, "42501", "nobody is added as a second owner");
}

#[tokio::test]
async fn admins_remove_members_but_not_the_owner_and_members_remove_nobody() {
    let g = group_chat().await;
    let (code, _) =
        g.db.as_user(g.member)
            .query_err(
                "select public.remove_conversation_member($1, $2)",
                &[&g.conv, &g.admin],
            )
            .await;
    assert_eq!(code, "42501");
    let (code, _) =
        g.db.as_user(g.admin)
            .query_err(
                "select public.remove_conversation_member($1, $2)",
                &[&g.conv, &g.owner],
            )
            .await;
    assert_eq!(code, "42501");
    assert_eq!(
        role_of(&g.db, g.conv, g.owner).await.as_deref(),
        Some("owner")
    );
    g.db.as_user(g.admin)
        .query(
            "select public.remove_conversation_member($1, $2)",
            &[&g.conv, &g.member],
        )
        .await;
    assert_eq!(role_of(&g.db, g.conv, g.member).await, None);
    // The removed member now sees nothing of the group.
    let n: i64 =
        g.db.as_user(g.member)
            .query_one("select count(*) from public.messages", &[])
            .await
            .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn members_cannot_promote_themselves() {
    let g = group_chat().await;
    let (code, _) = g
        .db
        .as_user(g.member)
        .query_err(
            "update public.conversation_members set role = 'admin' where conversation_id = $1 and user_id = $2",
            &[&g.conv, &g.member],
        )
        .await;
    assert_eq!(code, "42501");
    let changed = g
        .db
        .as_user(g.admin)
        .query(
            "update public.conversation_members set role = 'admin' where conversation_id = $1 and user_id = $2 returning user_id",
            &[&g.conv, &g.member],
        )
        .await;
    assert!(changed.is_empty(), "only the owner changes others' rows");
    assert_eq!(
        role_of(&g.db, g.conv, g.member).await.as_deref(),
        Some("member")
    );
    // Nor may anyone change another member's read state.
    let touched = g
        .db
        .as_user(g.owner)
        .try_query(
            "update public.conversation_members set last_read_at = now() where conversation_id = $1 and user_id = $2",
            &[&g.conv, &g.member],
        )
        .await;
    assert!(touched.is_err());
}

#[tokio::test]
async fn group_admins_delete_any_message_but_edit_none_but_their_own() {
    let g = group_chat().await;
    let m: Uuid =
        g.db.as_user(g.member)
            .query_one(
                "select (public.send_message($1, 'from mia')).id",
                &[&g.conv],
            )
            .await
            .get(0);
    let (code, _) =
        g.db.as_user(g.admin)
            .query_err("select public.edit_message($1, 'admin edit')", &[&m])
            .await;
    assert_eq!(code, "42501");
    let a: Uuid =
        g.db.as_user(g.admin)
            .query_one(
                "select (public.send_message($1, 'from adam')).id",
                &[&g.conv],
            )
            .await
            .get(0);
    let (code, _) =
        g.db.as_user(g.member)
            .query_err("select public.delete_message($1)", &[&a])
            .await;
    assert_eq!(code, "42501", "a member cannot delete the admin's message");
    g.db.as_user(g.admin)
        .query("select public.delete_message($1)", &[&m])
        .await;
    let row =
        g.db.client
            .query_one(
                "select body, deleted_at is not null from public.messages where id = $1",
                &[&m],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert!(row.get::<_, bool>(1));
}

#[tokio::test]
async fn anyone_may_leave_and_a_leaving_owner_hands_over() {
    let g = group_chat().await;
    g.db.as_user(g.owner)
        .query("select public.leave_conversation($1)", &[&g.conv])
        .await;
    assert_eq!(role_of(&g.db, g.conv, g.owner).await, None);
    assert_eq!(
        role_of(&g.db, g.conv, g.admin).await.as_deref(),
        Some("owner"),
        "the admin inherits the group"
    );
    g.db.as_user(g.member)
        .query("select public.leave_conversation($1)", &[&g.conv])
        .await;
    let (code, _) =
        g.db.as_user(g.outsider)
            .query_err("select public.leave_conversation($1)", &[&g.conv])
            .await;
    assert_eq!(code, "P0002");
    let bodies: Vec<String> = g
        .db
        .client
        .query(
            "select body from public.messages where conversation_id = $1 and kind = 'system' order by created_at, body",
            &[&g.conv],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(bodies.iter().any(|b| b == "Olga left"), "{bodies:?}");
    assert!(bodies.iter().any(|b| b == "Mia left"), "{bodies:?}");
}

#[tokio::test]
async fn nobody_leaves_or_is_removed_from_a_direct_conversation() {
    let d = direct_chat().await;
    let (code, _) =
        d.db.as_user(d.alice)
            .query_err("select public.leave_conversation($1)", &[&d.conv])
            .await;
    assert_eq!(code, "P0001");
    let gone = d
        .db
        .as_user(d.alice)
        .query(
            "delete from public.conversation_members where conversation_id = $1 returning user_id",
            &[&d.conv],
        )
        .await;
    assert!(gone.is_empty());
}

#[tokio::test]
async fn only_group_admins_change_group_details() {
    let g = group_chat().await;
    let (code, _) =
        g.db.as_user(g.member)
            .query_err("select public.update_group($1, 'Renamed')", &[&g.conv])
            .await;
    assert_eq!(code, "42501");
    g.db.as_user(g.admin)
        .query("select public.update_group($1, 'Renamed')", &[&g.conv])
        .await;
    let title: String =
        g.db.client
            .query_one(
                "select title from public.conversations where id = $1",
                &[&g.conv],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(title, "Renamed");
}
