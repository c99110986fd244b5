//! Operator roles and what each may do. Handlers ask for a [`Permission`],
//! never for a role, so a new role is one line here.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// See devices and sessions; watch a session view-only.
    View,
    /// Open sessions and send input to them.
    Control,
    /// Pair, enroll, tag and revoke devices and their keys.
    ManageDevices,
    /// Create users, change roles, disable accounts.
    ManageUsers,
    /// Read the audit log.
    AuditRead,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &[View, Control, ManageDevices, ManageUsers, AuditRead],
            Role::Operator => &[View, Control, ManageDevices],
            Role::Viewer => &[View],
        }
    }

    pub fn allows(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Control => "control",
            Permission::ManageDevices => "manage_devices",
            Permission::ManageUsers => "manage_users",
            Permission::AuditRead => "audit_read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_map_to_permissions() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(Role::Admin.allows(Permission::ManageUsers));
        assert!(!Role::Operator.allows(Permission::ManageUsers));
        assert!(Role::Operator.allows(Permission::Control));
        assert!(Role::Viewer.allows(Permission::View));
        assert!(!Role::Viewer.allows(Permission::Control));
        assert!(!Role::Viewer.allows(Permission::AuditRead));
    }
}
